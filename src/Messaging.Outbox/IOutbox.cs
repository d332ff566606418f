using System.Data.Common;
using CloudNative.CloudEvents;

namespace Messaging.Outbox;

/// <summary>
/// Publishes inside the caller's unit of work: events are written to the outbox table in the caller's transaction, so they
/// exist exactly when the transaction commits; the relay then publishes them through the transport, per topic in the
/// order they were written. Publishing is at-least-once: after a crash between the broker's accept and the row being
/// marked sent, a row is published again (consumers deduplicate with the inbox).
/// </summary>
public interface IOutbox
{
    /// <summary>
    /// Writes <paramref name="data"/> as a CloudEvent (built as <c>IEventPublisher.CreateEvent</c> builds it: the type and
    /// topic of <c>MapEvent&lt;T&gt;</c>, a new id) to the outbox in <paramref name="transaction"/>.
    /// </summary>
    /// <param name="data">The event's data, serialised as JSON.</param>
    /// <param name="transaction">The caller's open transaction on the outbox database.</param>
    /// <param name="configure">Overrides attributes or adds extensions before the event is stored.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>The CloudEvent as it will be published.</returns>
    Task<CloudEvent> PublishAsync<T>(T data, DbTransaction transaction, Action<CloudEvent>? configure = null, CancellationToken cancellationToken = default)
        where T : notnull;

    /// <summary>Writes a ready-made CloudEvent for <paramref name="topic"/> to the outbox in <paramref name="transaction"/>.</summary>
    /// <param name="topic">The topic the relay publishes it to.</param>
    /// <param name="cloudEvent">The event; it must be valid (id, source, type).</param>
    /// <param name="transaction">The caller's open transaction on the outbox database.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>A task that completes when the row is written (not committed).</returns>
    Task PublishAsync(string topic, CloudEvent cloudEvent, DbTransaction transaction, CancellationToken cancellationToken = default);

    /// <summary>Writes several CloudEvents for one topic, in order, to the outbox in <paramref name="transaction"/>.</summary>
    /// <param name="topic">The topic the relay publishes them to.</param>
    /// <param name="cloudEvents">The events, in the order they are to be published.</param>
    /// <param name="transaction">The caller's open transaction on the outbox database.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>A task that completes when the rows are written (not committed).</returns>
    Task PublishBatchAsync(string topic, IEnumerable<CloudEvent> cloudEvents, DbTransaction transaction, CancellationToken cancellationToken = default);
}
