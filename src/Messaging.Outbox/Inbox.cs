using System.Data.Common;
using CloudNative.CloudEvents;
using Messaging.Handling;
using Messaging.Outbox.Storage;

namespace Messaging.Outbox;

internal sealed class Inbox(OutboxStore store, TimeProvider time) : IInbox
{
    public Task<bool> TryMarkHandledAsync(string subscription, CloudEvent cloudEvent, DbTransaction transaction, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(subscription);
        ArgumentNullException.ThrowIfNull(cloudEvent);
        if (cloudEvent.Id is null || cloudEvent.Source is null)
        {
            throw new ArgumentException("The inbox identifies an event by its CloudEvent source and id; this event lacks one.", nameof(cloudEvent));
        }
        OutboxDatabase.CheckTransaction(store.Dialect, transaction);
        return store.TryMarkHandledAsync(transaction, subscription, cloudEvent.Source.OriginalString, cloudEvent.Id,
            time.GetUtcNow().ToUnixTimeMilliseconds(), cancellationToken);
    }

    public Task<bool> TryMarkHandledAsync(EventContext context, DbTransaction transaction, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(context);
        return TryMarkHandledAsync(context.Subscription, context.Event, transaction, cancellationToken);
    }
}
