using Messaging.DeadLetters;
using Messaging.Diagnostics;
using Messaging.Hosting;
using Messaging.InMemory;
using Messaging.Publishing;
using Messaging.Transport;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers messaging in a service collection.</summary>
public static class MessagingServiceCollectionExtensions
{
    /// <summary>
    /// Adds messaging configured from the <c>Messaging</c> section of <paramref name="configuration"/>
    /// (transport selection, provisioning, per-subscription policy), with the in-memory transport registered as the default.
    /// </summary>
    public static MessagingBuilder AddMessaging(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        return services.AddMessagingCore(configuration.GetSection(MessagingOptions.SectionName));
    }

    /// <summary>Adds messaging configured in code only (in-memory transport unless another is selected).</summary>
    public static MessagingBuilder AddMessaging(this IServiceCollection services) => services.AddMessagingCore(null);

    private static MessagingBuilder AddMessagingCore(this IServiceCollection services, IConfigurationSection? section)
    {
        ArgumentNullException.ThrowIfNull(services);
        if (services.Any(d => d.ServiceType == typeof(MessagingModel)))
        {
            throw new InvalidOperationException("AddMessaging was called twice; call it once and chain the builder.");
        }
        var model = new MessagingModel();
        services.AddSingleton(model);
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<ILoggerFactory>(NullLoggerFactory.Instance);

        // Code declares defaults; configuration overrides them. Both applied in one step so the order is fixed.
        services.AddOptions<MessagingOptions>()
            .Configure(options =>
            {
                foreach (var subscription in model.Subscriptions.Values)
                {
                    var settings = new SubscriptionOptions();
                    foreach (var apply in subscription.Defaults)
                    {
                        apply(settings);
                    }
                    options.Subscriptions[subscription.Name] = settings;
                }
                section?.Bind(options);
            })
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<MessagingOptions>, MessagingOptionsValidator>();

        services.AddSingleton<IMessageTransport>(sp =>
        {
            var options = sp.GetRequiredService<IOptions<MessagingOptions>>().Value;
            var factory = model.Transports[options.Transport];
            var context = new TransportContext(model.ExtensionAttributes, sp.GetRequiredService<ILoggerFactory>(), sp.GetRequiredService<TimeProvider>());
            return factory(sp, context);
        });
        services.AddSingleton<IEventPublisher, EventPublisher>();
        services.AddSingleton<IDeadLetterStore>(sp => sp.GetRequiredService<IMessageTransport>().DeadLetters);
        services.TryAddSingleton<ConsumerRegistry>();
        services.AddHostedService<MessagingHostedService>();
        // After the messaging service, so that it reads a provisioned topology.
        services.AddHostedService<BacklogPoller>();

        var builder = new MessagingBuilder(services, model, section);
        builder.AddInMemoryTransport();
        return builder;
    }
}
