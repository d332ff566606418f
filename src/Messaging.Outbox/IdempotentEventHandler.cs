using System.Data.Common;
using Messaging.Handling;

namespace Messaging.Outbox;

/// <summary>
/// A handler that runs at most once per event and subscription, however often the broker delivers it: it opens a
/// transaction on the outbox database, records the event in the inbox, runs <see cref="HandleAsync(TEvent, EventContext, DbTransaction, CancellationToken)"/>
/// in that transaction and commits. A redelivery of an event whose transaction committed finds the inbox row and is
/// completed without running the handler. Events published through <see cref="IOutbox"/> in the same transaction are
/// sent exactly when the handling commits.
/// </summary>
/// <typeparam name="TEvent">The event's data type.</typeparam>
public abstract class IdempotentEventHandler<TEvent> : IEventHandler<TEvent>
{
    private readonly IOutboxDatabase _database;
    private readonly IInbox _inbox;

    /// <summary>Creates the handler on the outbox database and its inbox.</summary>
    /// <param name="database">The outbox database, where the handler's own tables live too.</param>
    /// <param name="inbox">The inbox of handled events.</param>
    protected IdempotentEventHandler(IOutboxDatabase database, IInbox inbox)
    {
        _database = database ?? throw new ArgumentNullException(nameof(database));
        _inbox = inbox ?? throw new ArgumentNullException(nameof(inbox));
    }

    /// <inheritdoc />
    public virtual async Task HandleAsync(TEvent data, EventContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(context);
        await using var connection = await _database.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        if (!await _inbox.TryMarkHandledAsync(context, transaction, cancellationToken).ConfigureAwait(false))
        {
            return; // already handled: completing it settles the redelivery
        }
        await HandleAsync(data, context, transaction, cancellationToken).ConfigureAwait(false);
        if (context.RejectionReason is not null)
        {
            return; // rejected: nothing is kept, the event goes to the dead-letter destination
        }
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Handles the event inside <paramref name="transaction"/>, which commits when this returns.</summary>
    /// <param name="data">The event's data.</param>
    /// <param name="context">The CloudEvent, the attempt and the subscription.</param>
    /// <param name="transaction">The open transaction: write the handler's effects and outbox events in it; do not commit it.</param>
    /// <param name="cancellationToken">Cancelled when the host stops or the message's lease is lost.</param>
    /// <returns>A task that completes when the event is handled.</returns>
    protected abstract Task HandleAsync(TEvent data, EventContext context, DbTransaction transaction, CancellationToken cancellationToken);
}

/// <summary>
/// The raw-CloudEvent form of <see cref="IdempotentEventHandler{TEvent}"/>: at most once per event (<c>source</c> +
/// <c>id</c>) and subscription, in one transaction with the inbox row.
/// </summary>
public abstract class IdempotentCloudEventHandler : ICloudEventHandler
{
    private readonly IOutboxDatabase _database;
    private readonly IInbox _inbox;

    /// <summary>Creates the handler on the outbox database and its inbox.</summary>
    /// <param name="database">The outbox database, where the handler's own tables live too.</param>
    /// <param name="inbox">The inbox of handled events.</param>
    protected IdempotentCloudEventHandler(IOutboxDatabase database, IInbox inbox)
    {
        _database = database ?? throw new ArgumentNullException(nameof(database));
        _inbox = inbox ?? throw new ArgumentNullException(nameof(inbox));
    }

    /// <inheritdoc />
    public virtual async Task HandleAsync(EventContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(context);
        await using var connection = await _database.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        if (!await _inbox.TryMarkHandledAsync(context, transaction, cancellationToken).ConfigureAwait(false))
        {
            return;
        }
        await HandleAsync(context, transaction, cancellationToken).ConfigureAwait(false);
        if (context.RejectionReason is not null)
        {
            return;
        }
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Handles the event inside <paramref name="transaction"/>, which commits when this returns.</summary>
    /// <param name="context">The CloudEvent, the attempt and the subscription.</param>
    /// <param name="transaction">The open transaction: write the handler's effects and outbox events in it; do not commit it.</param>
    /// <param name="cancellationToken">Cancelled when the host stops or the message's lease is lost.</param>
    /// <returns>A task that completes when the event is handled.</returns>
    protected abstract Task HandleAsync(EventContext context, DbTransaction transaction, CancellationToken cancellationToken);
}
