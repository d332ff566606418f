using System.Data.Common;
using System.Diagnostics;
using CloudNative.CloudEvents;
using Messaging.Diagnostics;
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
        // The span of writing the events ("create", as OpenTelemetry's messaging conventions name it for an outbox): its
        // trace context travels in the stored events, so the consumers' spans continue the writer's trace, not the relay's.
        using var activity = MessagingDiagnostics.ActivitySource.StartActivity($"create {topic}", ActivityKind.Producer);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag("messaging.operation.type", "create");
            activity.SetTag("messaging.operation.name", "outbox");
            activity.SetTag("messaging.destination.name", topic);
            if (events.Count != 1)
            {
                activity.SetTag("messaging.batch.message_count", events.Count);
            }
        }
        var rows = new List<(string, byte[])>(events.Count);
        foreach (var cloudEvent in events)
        {
            ArgumentNullException.ThrowIfNull(cloudEvent);
            MessagingDiagnostics.Inject(cloudEvent, activity ?? Activity.Current);
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
