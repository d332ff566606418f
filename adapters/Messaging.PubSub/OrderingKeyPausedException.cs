using Messaging.Publishing;

namespace Messaging.PubSub;

/// <summary>
/// A publish with an ordering key was refused without being sent, because an earlier publish of the same key to the same
/// topic failed: sending it would put it ahead of the failed events and break the key's order (Pub/Sub delivers a key's
/// messages in the order they were stored). Publishing that key to that topic stays paused until the application, having
/// dealt with the failed events (published them again, or decided to skip them), calls
/// <see cref="PubSubTransport.ResumePublish"/>. Other keys, and events without a key, are not affected. Not transient:
/// trying again without resuming fails the same way.
/// </summary>
public sealed class OrderingKeyPausedException : EventPublishException
{
    /// <summary>Creates the exception; its message says how to resume the key.</summary>
    /// <param name="topic">The topic the key is paused for.</param>
    /// <param name="orderingKey">The paused ordering key.</param>
    /// <param name="failure">The failure of the earlier publish that paused the key, if known; it becomes the inner exception.</param>
    public OrderingKeyPausedException(string topic, string orderingKey, Exception? failure)
        : base($"Publishing to Pub/Sub topic '{topic}' with ordering key '{orderingKey}' is paused, because an earlier publish of that key failed" +
               (failure is null ? "" : $" ({failure.Message})") +
               "; sending later events of the key would break its order. Publish the failed events again if they are still wanted, then call " +
               $"PubSubTransport.ResumePublish(\"{topic}\", \"{orderingKey}\").",
               failure, isTransient: false)
    {
        Topic = topic;
        Transport = PubSubTransport.TransportName;
        OrderingKey = orderingKey;
    }

    /// <summary>The ordering key that is paused.</summary>
    public string OrderingKey { get; }
}
