using System.Data.Common;

namespace Messaging.Outbox;

/// <summary>
/// The database configured under <c>Messaging:Outbox</c>. Open connections from it for the unit of work whose transaction
/// the outbox and the inbox write in: the service's own tables live in the same database.
/// </summary>
public interface IOutboxDatabase
{
    /// <summary>The database kind.</summary>
    OutboxDatabaseProvider Provider { get; }

    /// <summary>Opens a new connection (pooled) to the configured database. The caller disposes it.</summary>
    /// <param name="cancellationToken">Cancels the open.</param>
    /// <returns>An open connection.</returns>
    Task<DbConnection> OpenConnectionAsync(CancellationToken cancellationToken = default);
}
