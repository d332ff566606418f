using Messaging.Handling;
using Messaging.Policy;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Messaging.Hosting;

/// <summary>Handlers and default policy of one subscription. Configuration (<c>Messaging:Subscriptions:{name}</c>) overrides the policy.</summary>
public sealed class SubscriptionBuilder
{
    private readonly IServiceCollection _services;
    private readonly SubscriptionModel _subscription;

    internal SubscriptionBuilder(IServiceCollection services, SubscriptionModel subscription)
    {
        _services = services;
        _subscription = subscription;
    }

    /// <summary>Handles events of CloudEvent <paramref name="eventType"/> whose JSON data deserialises to <typeparamref name="TEvent"/>.</summary>
    public SubscriptionBuilder Handle<TEvent, THandler>(string eventType)
        where THandler : class, IEventHandler<TEvent>
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(eventType);
        _services.TryAddTransient<THandler>();
        _subscription.Handlers.Add(HandlerRegistration.Typed<TEvent, THandler>(eventType));
        return this;
    }

    /// <summary>Handles <typeparamref name="TEvent"/> under the CloudEvent type given by <c>MapEvent&lt;TEvent&gt;</c> (or its full .NET name).</summary>
    public SubscriptionBuilder Handle<TEvent, THandler>()
        where THandler : class, IEventHandler<TEvent>
    {
        _services.TryAddTransient<THandler>();
        _subscription.Handlers.Add(HandlerRegistration.TypedLazy<TEvent, THandler>());
        return this;
    }

    /// <summary>Handles raw CloudEvents of <paramref name="eventType"/>, or of every type when it is <c>null</c>.</summary>
    public SubscriptionBuilder HandleCloudEvents<THandler>(string? eventType = null)
        where THandler : class, ICloudEventHandler
    {
        _services.TryAddTransient<THandler>();
        _subscription.Handlers.Add(HandlerRegistration.Raw<THandler>(eventType));
        return this;
    }

    /// <summary>Sets the default policy (overridden by configuration).</summary>
    public SubscriptionBuilder Configure(Action<SubscriptionOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        _subscription.Defaults.Add(configure);
        return this;
    }

    /// <summary>Delivery attempts before an event is dead-lettered, the first included (1 = no retry). Default 5.</summary>
    public SubscriptionBuilder WithMaxAttempts(int maxAttempts) => Configure(o => o.MaxAttempts = maxAttempts);

    /// <summary>
    /// The wait between a failed attempt and the next: <see cref="Backoff.Immediate"/>, <see cref="Backoff.Fixed"/> or
    /// <see cref="Backoff.Exponential"/>. Default exponential from 1 s, doubling, capped at 1 minute.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="backoff"/> is null.</exception>
    public SubscriptionBuilder WithBackoff(Backoff backoff)
    {
        ArgumentNullException.ThrowIfNull(backoff);
        return Configure(o =>
        {
            o.Backoff = backoff.Kind;
            o.BackoffDelay = backoff.Delay;
            o.MaxBackoffDelay = backoff.MaxDelay;
            o.BackoffMultiplier = backoff.Multiplier;
        });
    }

    /// <summary>Most handlers running at once for this subscription in this process. Default 8.</summary>
    public SubscriptionBuilder WithConcurrency(int concurrency) => Configure(o => o.Concurrency = concurrency);

    /// <summary>Most messages the broker hands this process ahead of the handlers. Default 200; lower it for slow handlers.</summary>
    public SubscriptionBuilder WithPrefetch(int prefetch) => Configure(o => o.Prefetch = prefetch);

    /// <summary>
    /// Handles events with the same <c>partitionkey</c> one at a time, in publish order. Only transports that declare
    /// ordering keys support it (of the bundled ones, Pub/Sub); with any other the host refuses to start. Default off.
    /// </summary>
    public SubscriptionBuilder Ordered(bool ordered = true) => Configure(o => o.Ordered = ordered);

    /// <summary>What happens to events of a type no handler of the subscription accepts. Default <see cref="UnhandledEventAction.Complete"/>.</summary>
    public SubscriptionBuilder OnUnhandledEvents(UnhandledEventAction action) => Configure(o => o.UnhandledEvents = action);
}
