using CloudNative.CloudEvents;
using Messaging.Handling;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Storage;

namespace Messaging.Outbox.EntityFrameworkCore;

/// <summary>
/// The outbox and the inbox in an EF Core unit of work: the <see cref="DbContext"/>'s current transaction (begun with
/// <c>Database.BeginTransactionAsync</c>) is the one the rows are written in, so they commit with <c>SaveChangesAsync</c>'s
/// changes when that transaction commits. The context must use the outbox database (the same SQLite file or PostgreSQL
/// database that <c>Messaging:Outbox</c> names).
/// </summary>
public static class OutboxDbContextExtensions
{
    /// <summary>Writes <paramref name="data"/> as a CloudEvent to the outbox in <paramref name="dbContext"/>'s current transaction.</summary>
    /// <param name="outbox">The outbox.</param>
    /// <param name="data">The event's data; type and topic come from <c>MapEvent&lt;T&gt;</c>.</param>
    /// <param name="dbContext">A context with a transaction begun.</param>
    /// <param name="configure">Overrides attributes or adds extensions before the event is stored.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>The CloudEvent as it will be published.</returns>
    /// <exception cref="InvalidOperationException">The context has no current transaction.</exception>
    public static Task<CloudEvent> PublishAsync<T>(this IOutbox outbox, T data, DbContext dbContext, Action<CloudEvent>? configure = null,
        CancellationToken cancellationToken = default)
        where T : notnull
    {
        ArgumentNullException.ThrowIfNull(outbox);
        return outbox.PublishAsync(data, TransactionOf(dbContext), configure, cancellationToken);
    }

    /// <summary>Writes a ready-made CloudEvent for <paramref name="topic"/> to the outbox in <paramref name="dbContext"/>'s current transaction.</summary>
    /// <param name="outbox">The outbox.</param>
    /// <param name="topic">The topic the relay publishes it to.</param>
    /// <param name="cloudEvent">The event.</param>
    /// <param name="dbContext">A context with a transaction begun.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>A task that completes when the row is written (not committed).</returns>
    /// <exception cref="InvalidOperationException">The context has no current transaction.</exception>
    public static Task PublishAsync(this IOutbox outbox, string topic, CloudEvent cloudEvent, DbContext dbContext, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(outbox);
        return outbox.PublishAsync(topic, cloudEvent, TransactionOf(dbContext), cancellationToken);
    }

    /// <summary>
    /// Records in <paramref name="dbContext"/>'s current transaction that the context's subscription handled its event;
    /// false when it already had (a redelivery: complete it without handling it again).
    /// </summary>
    /// <param name="inbox">The inbox.</param>
    /// <param name="context">The handler's event context.</param>
    /// <param name="dbContext">A context with a transaction begun.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>True the first time; false for an event already handled.</returns>
    /// <exception cref="InvalidOperationException">The context has no current transaction.</exception>
    public static Task<bool> TryMarkHandledAsync(this IInbox inbox, EventContext context, DbContext dbContext, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(inbox);
        return inbox.TryMarkHandledAsync(context, TransactionOf(dbContext), cancellationToken);
    }

    /// <summary>
    /// Records in <paramref name="dbContext"/>'s current transaction that <paramref name="subscription"/> handled
    /// <paramref name="cloudEvent"/>; false when it already had.
    /// </summary>
    /// <param name="inbox">The inbox.</param>
    /// <param name="subscription">The subscription handling the event.</param>
    /// <param name="cloudEvent">The event; its <c>source</c> and <c>id</c> identify it.</param>
    /// <param name="dbContext">A context with a transaction begun.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>True the first time; false for an event already handled.</returns>
    /// <exception cref="InvalidOperationException">The context has no current transaction.</exception>
    public static Task<bool> TryMarkHandledAsync(this IInbox inbox, string subscription, CloudEvent cloudEvent, DbContext dbContext,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(inbox);
        return inbox.TryMarkHandledAsync(subscription, cloudEvent, TransactionOf(dbContext), cancellationToken);
    }

    private static System.Data.Common.DbTransaction TransactionOf(DbContext dbContext)
    {
        ArgumentNullException.ThrowIfNull(dbContext);
        var transaction = dbContext.Database.CurrentTransaction
            ?? throw new InvalidOperationException(
                $"{dbContext.GetType().Name} has no current transaction: begin one with Database.BeginTransactionAsync() before writing to the " +
                "outbox or the inbox, and commit it after SaveChangesAsync, so that the rows commit with the context's changes.");
        return transaction.GetDbTransaction();
    }
}
