using Messaging.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace Messaging.InMemory;

public static class InMemoryMessagingBuilderExtensions
{
    /// <summary>
    /// Registers the in-memory transport (done by <c>AddMessaging</c>). The broker is a DI singleton; register your own
    /// <see cref="InMemoryBroker"/> first to share one between several hosts.
    /// </summary>
    public static MessagingBuilder AddInMemoryTransport(this MessagingBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.AddTransportOptions<InMemoryTransportOptions>(InMemoryTransport.TransportName)
               .Validate(o => o.QueueCapacity >= 1, "Messaging:InMemory:QueueCapacity must be at least 1.")
               .Validate(o => o.MaxEventSizeBytes >= 1024, "Messaging:InMemory:MaxEventSizeBytes must be at least 1024.");
        builder.Services.TryAddSingleton(sp => new InMemoryBroker(sp.GetRequiredService<IOptions<InMemoryTransportOptions>>().Value));
        return builder.AddTransport(InMemoryTransport.TransportName,
            (sp, context) => new InMemoryTransport(sp.GetRequiredService<InMemoryBroker>(), context.ExtensionAttributes, context.TimeProvider));
    }
}
