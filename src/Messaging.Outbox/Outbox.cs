using System.Data.Common;
using CloudNative.CloudEvents;
using Messaging.Envelope;
using Messaging.Hosting;
using Messaging.Outbox.Storage;
using Messaging.Publishing;

namespace Messaging.Outbox;

internal sealed class Outbox(OutboxStore store, IEventPublisher publisher, MessagingModel model, OutboxSignal signal, TimeProvider time) : IOutbox
{
    public async Task<CloudEvent> PublishAsync<T>(T data, DbTransaction transaction, Action<CloudEvent>? configure = null,
        CancellationToken cancellationToken = default)
        where T : notnull
    {
        var cloudEvent = publisher.CreateEvent(data, configure);
        await AppendAsync(model.GetEventMapping(typeof(T)).Topic, [cloudEvent], transaction, cancellationToken).ConfigureAwait(false);
        return cloudEvent;
    }

    public Task PublishAsync(string topic, CloudEvent cloudEvent, DbTransaction transaction, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(cloudEvent);
        return AppendAsync(topic, [cloudEvent], transaction, cancellationToken);
    }

    public Task PublishBatchAsync(string topic, IEnumerable<CloudEvent> cloudEvents, DbTransaction transaction, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(cloudEvents);
        var batch = cloudEvents as IReadOnlyList<CloudEvent> ?? cloudEvents.ToList();
        return batch.Count == 0 ? Task.CompletedTask : AppendAsync(topic, batch, transaction, cancellationToken);
    }

    private async Task AppendAsync(string topic, IReadOnlyList<CloudEvent> events, DbTransaction transaction, CancellationToken cancellationToken)
    {
        EntityNames.Validate(topic, "topic");
        OutboxDatabase.CheckTransaction(store.Dialect, transaction);
        var rows = new List<(string, byte[])>(events.Count);
        foreach (var cloudEvent in events)
        {
            ArgumentNullException.ThrowIfNull(cloudEvent);
            // Stored as it will be sent: the same checks as a direct publish, so a bad event fails the caller's unit of work
            // now instead of blocking its topic in the relay later.
            CloudEventAttributeMap.EnsureValid(cloudEvent);
            CloudEventData.Normalize(cloudEvent, model.JsonOptions);
            rows.Add((cloudEvent.Id!, StructuredJson.Encode(cloudEvent).ToArray()));
        }
        await store.AppendAsync(transaction, topic, rows, time.GetUtcNow().ToUnixTimeMilliseconds(), cancellationToken).ConfigureAwait(false);
        // The rows are not committed yet; the relay polls quickly for a while after a signal so it picks them up soon after.
        signal.Notify();
    }
}
