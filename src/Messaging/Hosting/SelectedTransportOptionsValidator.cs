using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Messaging.Hosting;

/// <summary>
/// Validates a transport's own options at start-up, together with <see cref="MessagingOptions"/>, but only when that
/// transport is the selected one: a service configured for RabbitMQ does not fail over an unused Pub/Sub section.
/// </summary>
internal sealed class SelectedTransportOptionsValidator<TOptions>(string transportName, IServiceProvider services) : IValidateOptions<MessagingOptions>
    where TOptions : class
{
    public ValidateOptionsResult Validate(string? name, MessagingOptions options)
    {
        if (!string.Equals(options.Transport, transportName, StringComparison.OrdinalIgnoreCase))
        {
            return ValidateOptionsResult.Skip;
        }
        try
        {
            _ = services.GetRequiredService<IOptions<TOptions>>().Value;
            return ValidateOptionsResult.Success;
        }
        catch (OptionsValidationException ex)
        {
            return ValidateOptionsResult.Fail(ex.Failures);
        }
    }
}
