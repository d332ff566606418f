using System.Data.Common;
using CloudNative.CloudEvents;
using Messaging.Handling;

namespace Messaging.Outbox;

/// <summary>
/// The idempotent-consumer table: which events (by CloudEvent <c>source</c> and <c>id</c>) each subscription has handled.
/// Record the event in the same transaction as the handler's effects; a redelivery then finds it and can be completed
/// without running the handler again. <see cref="IdempotentEventHandler{TEvent}"/> does this for a handler.
/// </summary>
public interface IInbox
{
    /// <summary>
    /// Records that <paramref name="subscription"/> handled <paramref name="cloudEvent"/>, in <paramref name="transaction"/>.
    /// Returns false when it was recorded already (by a committed transaction, or one that commits while this waits): the
    /// event is a redelivery and must not be handled again.
    /// </summary>
    /// <param name="subscription">The subscription handling the event.</param>
    /// <param name="cloudEvent">The event; its <c>source</c> and <c>id</c> identify it.</param>
    /// <param name="transaction">The handler's open transaction on the outbox database.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>True the first time; false for an event already handled.</returns>
    Task<bool> TryMarkHandledAsync(string subscription, CloudEvent cloudEvent, DbTransaction transaction, CancellationToken cancellationToken = default);

    /// <summary>Records that the context's subscription handled the context's event; see the other overload.</summary>
    /// <param name="context">The handler's event context.</param>
    /// <param name="transaction">The handler's open transaction on the outbox database.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>True the first time; false for an event already handled.</returns>
    Task<bool> TryMarkHandledAsync(EventContext context, DbTransaction transaction, CancellationToken cancellationToken = default);
}
