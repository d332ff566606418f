using Messaging.Policy;

namespace Messaging.Topology;

/// <summary>
/// A subscription to a topic: every subscription gets every event published to its topic (fan-out),
/// and the consumers of one subscription compete for its events.
/// </summary>
public sealed record SubscriptionDefinition
{
    /// <summary>Unique name of the subscription (also the broker queue or subscription name).</summary>
    public required string Name { get; init; }

    /// <summary>The topic it receives from.</summary>
    public required string Topic { get; init; }

    /// <summary>Maximum delivery attempts and backoff between them.</summary>
    public RetryPolicy Retry { get; init; } = RetryPolicy.Default;

    /// <summary>Most handlers running at once for this subscription in one process.</summary>
    public int Concurrency { get; init; } = 8;

    /// <summary>Most messages the broker may push ahead of the handlers.</summary>
    public int Prefetch { get; init; } = 200;

    /// <summary>Handle events with the same <c>partitionkey</c> in publish order (needs the ordering capability).</summary>
    public bool Ordered { get; init; }
}
