using System.Data.Common;
using System.Text;

namespace Messaging.Outbox.Storage;

/// <summary>One pending outbox row: its id (the write order) and the stored CloudEvent.</summary>
internal readonly record struct OutboxRow(long Id, string EventId, byte[] Payload);

/// <summary>
/// Every statement the outbox, the relay and the inbox run. The SQL is the same on SQLite and PostgreSQL (both have
/// <c>ON CONFLICT</c>, partial indexes and <c>LIMIT</c>); what differs lives in <see cref="OutboxDialect"/>.
/// </summary>
internal sealed class OutboxStore(OutboxDialect dialect)
{
    public OutboxDialect Dialect { get; } = dialect;

    /// <summary>Creates or migrates the schema to the latest version; returns the version the database was at.</summary>
    public async Task<int> MigrateAsync(CancellationToken cancellationToken, int? targetVersion = null)
    {
        var target = targetVersion ?? Dialect.Migrations.Count;
        await using var connection = Dialect.CreateConnection();
        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        if (Dialect is SqliteOutboxDialect)
        {
            // Readers (the relay's queries) do not wait for writers. Persistent in the file; not allowed in a transaction.
            await ExecuteAsync(connection, null, "PRAGMA journal_mode=WAL;", cancellationToken).ConfigureAwait(false);
        }
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        await Dialect.LockSchemaAsync(transaction, cancellationToken).ConfigureAwait(false);
        await ExecuteAsync(connection, transaction, "CREATE TABLE IF NOT EXISTS messaging_schema (version INTEGER NOT NULL)", cancellationToken).ConfigureAwait(false);
        var found = await ScalarAsync(connection, transaction, "SELECT MAX(version) FROM messaging_schema", cancellationToken).ConfigureAwait(false);
        var version = found is null or DBNull ? 0 : Convert.ToInt32(found, System.Globalization.CultureInfo.InvariantCulture);
        if (version > Dialect.Migrations.Count)
        {
            throw new InvalidOperationException(
                $"The outbox schema is at version {version}, newer than this library knows ({Dialect.Migrations.Count}); upgrade Messaging.Outbox.");
        }
        for (var next = version; next < target; next++)
        {
            await ExecuteAsync(connection, transaction, Dialect.Migrations[next], cancellationToken).ConfigureAwait(false);
        }
        if (target > version)
        {
            await ExecuteAsync(connection, transaction, "DELETE FROM messaging_schema", cancellationToken).ConfigureAwait(false);
            await ExecuteAsync(connection, transaction, "INSERT INTO messaging_schema (version) VALUES (@v)", cancellationToken, ("@v", target)).ConfigureAwait(false);
        }
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        return version;
    }

    /// <summary>Appends rows of one topic in the caller's transaction, in list order.</summary>
    public async Task AppendAsync(DbTransaction transaction, string topic, IReadOnlyList<(string EventId, byte[] Payload)> rows, long now,
        CancellationToken cancellationToken)
    {
        var connection = transaction.Connection!;
        await Dialect.LockTopicForAppendAsync(transaction, topic, cancellationToken).ConfigureAwait(false);
        await using var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "INSERT INTO messaging_outbox (topic, event_id, payload, created_at) VALUES (@topic, @id, @payload, @now)";
        Add(command, "@topic", topic);
        var idParameter = Add(command, "@id", string.Empty);
        var payloadParameter = Add(command, "@payload", Array.Empty<byte>());
        Add(command, "@now", now);
        foreach (var (eventId, payload) in rows)
        {
            idParameter.Value = eventId;
            payloadParameter.Value = payload;
            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Topics with rows not yet sent.</summary>
    public async Task<IReadOnlyList<string>> PendingTopicsAsync(DbConnection connection, CancellationToken cancellationToken)
    {
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT DISTINCT topic FROM messaging_outbox WHERE sent_at IS NULL";
        var topics = new List<string>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            topics.Add(reader.GetString(0));
        }
        return topics;
    }

    /// <summary>
    /// Claims (or renews) the lease of a topic for <paramref name="owner"/>: succeeds when the topic is free, already this
    /// owner's, or its lease expired. One statement, so two instances never both succeed.
    /// </summary>
    public async Task<bool> TryLeaseAsync(DbConnection connection, string topic, string owner, long now, long until, CancellationToken cancellationToken)
    {
        await ExecuteAsync(connection, null,
            "INSERT INTO messaging_outbox_topics (topic, owner, lease_until) VALUES (@topic, NULL, 0) ON CONFLICT (topic) DO NOTHING",
            cancellationToken, ("@topic", topic)).ConfigureAwait(false);
        var updated = await ExecuteAsync(connection, null,
            "UPDATE messaging_outbox_topics SET owner = @owner, lease_until = @until " +
            "WHERE topic = @topic AND (owner IS NULL OR owner = @owner OR lease_until < @now)",
            cancellationToken, ("@topic", topic), ("@owner", owner), ("@until", until), ("@now", now)).ConfigureAwait(false);
        return updated == 1;
    }

    /// <summary>Renews a lease this owner still holds; false when another instance took the topic over.</summary>
    public async Task<bool> RenewLeaseAsync(DbConnection connection, string topic, string owner, long until, CancellationToken cancellationToken) =>
        await ExecuteAsync(connection, null,
            "UPDATE messaging_outbox_topics SET lease_until = @until WHERE topic = @topic AND owner = @owner",
            cancellationToken, ("@topic", topic), ("@owner", owner), ("@until", until)).ConfigureAwait(false) == 1;

    /// <summary>Gives a topic back, so any instance may take it at once.</summary>
    public Task ReleaseLeaseAsync(DbConnection connection, string topic, string owner, CancellationToken cancellationToken) =>
        ExecuteAsync(connection, null,
            "UPDATE messaging_outbox_topics SET owner = NULL, lease_until = 0 WHERE topic = @topic AND owner = @owner",
            cancellationToken, ("@topic", topic), ("@owner", owner));

    /// <summary>The oldest unsent rows of a topic, in write order.</summary>
    public async Task<IReadOnlyList<OutboxRow>> ReadPendingAsync(DbConnection connection, string topic, int limit, CancellationToken cancellationToken)
    {
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT id, event_id, payload FROM messaging_outbox WHERE topic = @topic AND sent_at IS NULL ORDER BY id LIMIT @limit";
        Add(command, "@topic", topic);
        Add(command, "@limit", limit);
        var rows = new List<OutboxRow>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            rows.Add(new OutboxRow(reader.GetInt64(0), reader.GetString(1), (byte[])reader.GetValue(2)));
        }
        return rows;
    }

    /// <summary>Marks rows sent.</summary>
    public async Task MarkSentAsync(DbConnection connection, IReadOnlyList<long> ids, long now, CancellationToken cancellationToken)
    {
        if (ids.Count == 0)
        {
            return;
        }
        await using var command = connection.CreateCommand();
        var sql = new StringBuilder("UPDATE messaging_outbox SET sent_at = @now WHERE id IN (");
        for (var i = 0; i < ids.Count; i++)
        {
            sql.Append(i == 0 ? "" : ",").Append("@i").Append(i);
            Add(command, "@i" + i, ids[i]);
        }
        command.CommandText = sql.Append(')').ToString();
        Add(command, "@now", now);
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Deletes sent rows and inbox rows older than their retention; returns how many of each went.</summary>
    public async Task<(int Sent, int Handled)> CleanupAsync(DbConnection connection, long sentBefore, long handledBefore, CancellationToken cancellationToken)
    {
        var sent = await ExecuteAsync(connection, null, "DELETE FROM messaging_outbox WHERE sent_at IS NOT NULL AND sent_at < @before",
            cancellationToken, ("@before", sentBefore)).ConfigureAwait(false);
        var handled = await ExecuteAsync(connection, null, "DELETE FROM messaging_inbox WHERE handled_at < @before",
            cancellationToken, ("@before", handledBefore)).ConfigureAwait(false);
        return (sent, handled);
    }

    /// <summary>
    /// Records an event as handled by a subscription in the caller's transaction; false when it was already recorded (a
    /// redelivery). On PostgreSQL a concurrent insert of the same key waits for the other transaction and then sees its row.
    /// </summary>
    public async Task<bool> TryMarkHandledAsync(DbTransaction transaction, string subscription, string source, string eventId, long now,
        CancellationToken cancellationToken) =>
        await ExecuteAsync(transaction.Connection!, transaction,
            "INSERT INTO messaging_inbox (subscription, source, event_id, handled_at) VALUES (@subscription, @source, @id, @now) " +
            "ON CONFLICT (subscription, source, event_id) DO NOTHING",
            cancellationToken, ("@subscription", subscription), ("@source", source), ("@id", eventId), ("@now", now)).ConfigureAwait(false) == 1;

    internal static async Task<int> ExecuteAsync(DbConnection connection, DbTransaction? transaction, string sql, CancellationToken cancellationToken,
        params (string Name, object Value)[] parameters)
    {
        await using var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        foreach (var (name, value) in parameters)
        {
            Add(command, name, value);
        }
        return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    private static async Task<object?> ScalarAsync(DbConnection connection, DbTransaction? transaction, string sql, CancellationToken cancellationToken)
    {
        await using var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
    }

    private static DbParameter Add(DbCommand command, string name, object value)
    {
        var parameter = command.CreateParameter();
        parameter.ParameterName = name;
        parameter.Value = value;
        command.Parameters.Add(parameter);
        return parameter;
    }
}
