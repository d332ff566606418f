using CloudNative.CloudEvents;

namespace Messaging.Handling;

/// <summary>What a handler knows about the event it is handling.</summary>
public sealed class EventContext
{
    internal EventContext(CloudEvent cloudEvent, int attempt, string subscription, string topic, IServiceProvider services)
    {
        Event = cloudEvent;
        Attempt = attempt;
        Subscription = subscription;
        Topic = topic;
        Services = services;
    }

    /// <summary>The CloudEvent as published.</summary>
    public CloudEvent Event { get; }

    /// <summary>The delivery attempt, starting at 1, counted by the broker.</summary>
    public int Attempt { get; }

    /// <summary>The subscription the event arrived on.</summary>
    public string Subscription { get; }

    /// <summary>The topic the subscription receives from.</summary>
    public string Topic { get; }

    /// <summary>The DI scope of this event.</summary>
    public IServiceProvider Services { get; }

    /// <summary>Set when the handler called <see cref="Reject"/>.</summary>
    public string? RejectionReason { get; private set; }

    /// <summary>
    /// Marks the event as unprocessable: once the handler returns it goes to the dead-letter destination
    /// at once, without further attempts. Throwing <see cref="UnprocessableEventException"/> does the same.
    /// </summary>
    public void Reject(string reason)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(reason);
        RejectionReason = reason;
    }
}
