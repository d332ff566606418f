using System.Data.Common;
using Messaging.Outbox.Storage;
using Microsoft.Extensions.Options;

namespace Messaging.Outbox;

internal sealed class OutboxDatabase(OutboxDialect dialect, IOptions<OutboxOptions> options) : IOutboxDatabase
{
    public OutboxDatabaseProvider Provider => options.Value.Provider;

    public async Task<DbConnection> OpenConnectionAsync(CancellationToken cancellationToken = default)
    {
        var connection = dialect.CreateConnection();
        try
        {
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
            return connection;
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    internal static void CheckTransaction(OutboxDialect dialect, DbTransaction transaction)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        var connection = transaction.Connection
            ?? throw new ArgumentException("The transaction has already been committed or rolled back.", nameof(transaction));
        if (!dialect.Accepts(connection))
        {
            throw new ArgumentException(
                $"The transaction is on a {connection.GetType().Name}, but the outbox is configured for {dialect.Name} (Messaging:Outbox:Provider). " +
                "Open the connection with IOutboxDatabase.", nameof(transaction));
        }
    }
}
