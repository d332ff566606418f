using Messaging.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Messaging.PubSub;

/// <summary>Registration of the Google Cloud Pub/Sub transport on a <see cref="MessagingBuilder"/>.</summary>
public static class PubSubMessagingBuilderExtensions
{
    /// <summary>
    /// Registers the Google Cloud Pub/Sub transport under the name <c>PubSub</c>, configured from <c>Messaging:PubSub</c>.
    /// Select it with <c>Messaging:Transport = PubSub</c>. Settings are validated at start-up when it is selected.
    /// </summary>
    public static MessagingBuilder AddPubSub(this MessagingBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.AddTransportOptions<PubSubTransportOptions>(PubSubTransport.TransportName);
        builder.Services.AddSingleton<IValidateOptions<PubSubTransportOptions>, PubSubOptionsValidator>();
        return builder.AddTransport(PubSubTransport.TransportName, (sp, context) => new PubSubTransport(
            sp.GetRequiredService<IOptions<PubSubTransportOptions>>().Value,
            context.ExtensionAttributes,
            context.LoggerFactory.CreateLogger<PubSubTransport>(),
            context.TimeProvider));
    }
}
