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
        _services.TryAddScoped<THandler>();
        _subscription.Handlers.Add(HandlerRegistration.Typed<TEvent, THandler>(eventType));
        return this;
    }

    /// <summary>Handles <typeparamref name="TEvent"/> under the CloudEvent type given by <c>MapEvent&lt;TEvent&gt;</c> (or its full .NET name).</summary>
    public SubscriptionBuilder Handle<TEvent, THandler>()
        where THandler : class, IEventHandler<TEvent>
    {
        _services.TryAddScoped<THandler>();
        _subscription.Handlers.Add(HandlerRegistration.TypedLazy<TEvent, THandler>());
        return this;
    }

    /// <summary>Handles raw CloudEvents of <paramref name="eventType"/>, or of every type when it is <c>null</c>.</summary>
    public SubscriptionBuilder HandleCloudEvents<THandler>(string? eventType = null)
        where THandler : class, ICloudEventHandler
    {
        _services.TryAddScoped<THandler>();
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

    public SubscriptionBuilder WithMaxAttempts(int maxAttempts) => Configure(o => o.MaxAttempts = maxAttempts);

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

    public SubscriptionBuilder WithConcurrency(int concurrency) => Configure(o => o.Concurrency = concurrency);

    public SubscriptionBuilder WithPrefetch(int prefetch) => Configure(o => o.Prefetch = prefetch);

    public SubscriptionBuilder Ordered(bool ordered = true) => Configure(o => o.Ordered = ordered);

    public SubscriptionBuilder OnUnhandledEvents(UnhandledEventAction action) => Configure(o => o.UnhandledEvents = action);
}
