using Messaging.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace Messaging.Health;

/// <summary>Registers the messaging health checks with <c>AddHealthChecks()</c>.</summary>
public static class MessagingHealthChecksBuilderExtensions
{
    /// <summary>The name of the consumers check: every subscription's consumer runs and receives.</summary>
    public const string ConsumersCheckName = "messaging-consumers";

    /// <summary>The name of the broker check: the transport reaches its broker.</summary>
    public const string BrokerCheckName = "messaging-broker";

    /// <summary>The name of the dead-letter check: no subscription holds dead letters (at or above a threshold).</summary>
    public const string DeadLettersCheckName = "messaging-dead-letters";

    /// <summary>The tag every messaging check carries, to select them in a health endpoint's predicate.</summary>
    public const string Tag = "messaging";

    /// <summary>
    /// Adds three health checks over the messaging registered with <c>AddMessaging</c>:
    /// <list type="bullet">
    /// <item><see cref="ConsumersCheckName"/>: unhealthy when a subscription's consumer is not running while the host runs,
    /// or its receiving has kept failing for <see cref="MessagingHealthCheckOptions.ConsumerFailureGracePeriod"/> (degraded
    /// before that), naming the subscription, the last error and since when;</item>
    /// <item><see cref="BrokerCheckName"/>: the transport's own cheap check of its broker connection
    /// (<see cref="Transport.IMessageTransport.CheckHealthAsync"/>), bounded by <see cref="MessagingHealthCheckOptions.CheckTimeout"/>;</item>
    /// <item><see cref="DeadLettersCheckName"/>: degraded when a subscription holds at least
    /// <see cref="MessagingHealthCheckOptions.DeadLetterDegradedThreshold"/> dead letters, naming it and the count.</item>
    /// </list>
    /// Options come from the <c>Messaging:HealthChecks</c> configuration section, then <paramref name="configure"/>, and are
    /// validated at start-up.
    /// </summary>
    public static IHealthChecksBuilder AddMessagingHealthChecks(this IHealthChecksBuilder builder, Action<MessagingHealthCheckOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var options = builder.Services.AddOptions<MessagingHealthCheckOptions>()
            .Configure<IServiceProvider>((o, services) => services.GetService<IConfiguration>()?.GetSection(MessagingHealthCheckOptions.SectionName).Bind(o));
        if (configure is not null)
        {
            options.Configure(configure);
        }
        options.ValidateOnStart();
        builder.Services.AddSingleton<IValidateOptions<MessagingHealthCheckOptions>, MessagingHealthCheckOptionsValidator>();
        // AddMessaging registers it too; here as well so the checks can be registered first.
        builder.Services.TryAddSingleton<ConsumerRegistry>();
        string[] tags = [Tag];
        builder.AddCheck<ConsumersHealthCheck>(ConsumersCheckName, tags: tags);
        builder.AddCheck<BrokerHealthCheck>(BrokerCheckName, tags: tags);
        builder.AddCheck<DeadLettersHealthCheck>(DeadLettersCheckName, tags: tags);
        return builder;
    }
}
