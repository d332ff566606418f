using Messaging.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Messaging.RabbitMQ;

/// <summary>Registration of the RabbitMQ transport on a <see cref="MessagingBuilder"/>.</summary>
public static class RabbitMqMessagingBuilderExtensions
{
    /// <summary>
    /// Registers the RabbitMQ transport, selected by <c>"Messaging": { "Transport": "RabbitMQ" }</c> and configured from
    /// <c>Messaging:RabbitMQ</c> (and <paramref name="configure"/>). Settings are validated at start-up when it is selected.
    /// </summary>
    public static MessagingBuilder AddRabbitMq(this MessagingBuilder builder, Action<RabbitMqTransportOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var options = builder.AddTransportOptions<RabbitMqTransportOptions>(RabbitMqTransport.TransportName);
        if (configure is not null)
        {
            options.Configure(configure);
        }
        builder.Services.AddSingleton<IValidateOptions<RabbitMqTransportOptions>, RabbitMqOptionsValidator>();
        return builder.AddTransport(RabbitMqTransport.TransportName, (sp, context) =>
            new RabbitMqTransport(sp.GetRequiredService<IOptions<RabbitMqTransportOptions>>().Value, context.ExtensionAttributes, context.LoggerFactory));
    }
}

internal sealed class RabbitMqOptionsValidator : IValidateOptions<RabbitMqTransportOptions>
{
    private const string Prefix = "Messaging:RabbitMQ";

    public ValidateOptionsResult Validate(string? name, RabbitMqTransportOptions o)
    {
        var errors = new List<string>();
        if (!string.IsNullOrWhiteSpace(o.Uri))
        {
            if (!System.Uri.TryCreate(o.Uri, UriKind.Absolute, out var uri) || uri.Scheme is not ("amqp" or "amqps"))
            {
                errors.Add($"{Prefix}:Uri '{Redact(o.Uri)}' is not an amqp:// or amqps:// URI.");
            }
            else if (o.UseTls && uri.Scheme == "amqp")
            {
                // Connecting in plaintext when TLS was asked for would send the credentials in the clear.
                errors.Add($"{Prefix}:UseTls is true but {Prefix}:Uri '{Redact(o.Uri)}' is amqp://, which is plaintext; use amqps:// (or leave UseTls off).");
            }
        }
        else
        {
            if (string.IsNullOrWhiteSpace(o.Host))
            {
                errors.Add($"{Prefix}:Host is empty; set Host or Uri.");
            }
            if (o.Port is < 1 or > 65535)
            {
                errors.Add($"{Prefix}:Port must be between 1 and 65535 (was {o.Port}).");
            }
            if (string.IsNullOrEmpty(o.UserName))
            {
                errors.Add($"{Prefix}:UserName is empty.");
            }
        }
        if (!string.IsNullOrWhiteSpace(o.TlsCaCertificatePath) && !File.Exists(o.TlsCaCertificatePath))
        {
            errors.Add($"{Prefix}:TlsCaCertificatePath '{o.TlsCaCertificatePath}' does not exist.");
        }
        if (!Enum.IsDefined(o.ContentMode))
        {
            errors.Add($"{Prefix}:ContentMode must be Binary or Structured (was {o.ContentMode}).");
        }
        if (!Enum.IsDefined(o.ExchangeType))
        {
            errors.Add($"{Prefix}:ExchangeType must be Fanout or Topic (was {o.ExchangeType}).");
        }
        if (o.PublisherChannels is < 1 or > 64)
        {
            errors.Add($"{Prefix}:PublisherChannels must be between 1 and 64 (was {o.PublisherChannels}).");
        }
        if (o.MaxOutstandingConfirms is < 1 or > 65535)
        {
            errors.Add($"{Prefix}:MaxOutstandingConfirms must be between 1 and 65535 (was {o.MaxOutstandingConfirms}).");
        }
        if (o.PublishTimeout <= TimeSpan.Zero)
        {
            errors.Add($"{Prefix}:PublishTimeout must be positive (was {o.PublishTimeout}).");
        }
        if (o.NetworkRecoveryInterval <= TimeSpan.Zero)
        {
            errors.Add($"{Prefix}:NetworkRecoveryInterval must be positive (was {o.NetworkRecoveryInterval}).");
        }
        if (o.MaxEventSizeBytes is < 1024 or > 128 * 1024 * 1024)
        {
            errors.Add($"{Prefix}:MaxEventSizeBytes must be between 1024 and 134217728, RabbitMQ's ceiling (was {o.MaxEventSizeBytes}).");
        }
        if (o.CrashDeliveryLimit < 1)
        {
            errors.Add($"{Prefix}:CrashDeliveryLimit must be at least 1 (was {o.CrashDeliveryLimit}).");
        }
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>The URI without its password, for messages and logs.</summary>
    internal static string Redact(string uri)
    {
        if (System.Uri.TryCreate(uri, UriKind.Absolute, out var parsed) && parsed.UserInfo.Length > 0)
        {
            var user = parsed.UserInfo.Split(':', 2)[0];
            return new UriBuilder(parsed) { UserName = user, Password = parsed.UserInfo.Contains(':', StringComparison.Ordinal) ? "***" : string.Empty }.Uri.ToString();
        }
        return System.Text.RegularExpressions.Regex.Replace(uri, "//[^@/]*@", "//***@");
    }
}
