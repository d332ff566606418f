using CloudNative.CloudEvents;

namespace Messaging.Publishing;

/// <summary>Publishes CloudEvents. Every method completes only once the broker has durably accepted the event(s).</summary>
public interface IEventPublisher
{
    /// <summary>
    /// Publishes <paramref name="data"/> as a CloudEvent: <c>type</c> and topic come from <c>MapEvent&lt;T&gt;</c>,
    /// <c>source</c> from <c>Messaging:Source</c>, <c>id</c> is a new UUIDv7, <c>time</c> is now, data is JSON.
    /// <paramref name="configure"/> may override any attribute or add extensions before it is sent.
    /// </summary>
    Task<CloudEvent> PublishAsync<T>(T data, Action<CloudEvent>? configure = null, CancellationToken cancellationToken = default)
        where T : notnull;

    /// <summary>Publishes a ready-made CloudEvent to <paramref name="topic"/>.</summary>
    Task PublishAsync(string topic, CloudEvent cloudEvent, CancellationToken cancellationToken = default);

    /// <summary>Publishes several CloudEvents to one topic, pipelined; completes when all are accepted.</summary>
    Task PublishBatchAsync(string topic, IEnumerable<CloudEvent> cloudEvents, CancellationToken cancellationToken = default);

    /// <summary>Builds (without sending) the CloudEvent that <see cref="PublishAsync{T}"/> would send, e.g. for batches of typed events.</summary>
    CloudEvent CreateEvent<T>(T data, Action<CloudEvent>? configure = null)
        where T : notnull;
}
