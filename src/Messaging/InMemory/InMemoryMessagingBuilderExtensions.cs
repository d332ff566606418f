using Messaging.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace Messaging.InMemory;

/// <summary>Registration of the in-memory transport on a <see cref="MessagingBuilder"/>.</summary>
public static class InMemoryMessagingBuilderExtensions
{
    /// <summary>
    /// Registers the in-memory transport (done by <c>AddMessaging</c>). The broker is a DI singleton; register your own
    /// <see cref="InMemoryBroker"/> first to share one between several hosts.
    /// </summary>
    public static MessagingBuilder AddInMemoryTransport(this MessagingBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.AddTransportOptions<InMemoryTransportOptions>(InMemoryTransport.TransportName);
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<InMemoryTransportOptions>, InMemoryOptionsValidator>());
        builder.Services.TryAddSingleton(sp => new InMemoryBroker(sp.GetRequiredService<IOptions<InMemoryTransportOptions>>().Value));
        return builder.AddTransport(InMemoryTransport.TransportName,
            (sp, context) => new InMemoryTransport(sp.GetRequiredService<InMemoryBroker>(), context.ExtensionAttributes, context.TimeProvider));
    }
}

/// <summary>Checks <see cref="InMemoryTransportOptions"/> at start-up; every message names the setting.</summary>
internal sealed class InMemoryOptionsValidator : IValidateOptions<InMemoryTransportOptions>
{
    public ValidateOptionsResult Validate(string? name, InMemoryTransportOptions options)
    {
        var problems = new List<string>();
        if (options.QueueCapacity < 1)
        {
            problems.Add("Messaging:InMemory:QueueCapacity must be at least 1.");
        }
        if (options.MaxEventSizeBytes < 1024)
        {
            problems.Add("Messaging:InMemory:MaxEventSizeBytes must be at least 1024.");
        }
        if (options.CrashDeliveryLimit < 1)
        {
            problems.Add("Messaging:InMemory:CrashDeliveryLimit must be at least 1.");
        }
        return problems.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(problems);
    }
}
