using System.Data.Common;

namespace Messaging.Outbox.Storage;

/// <summary>What differs between the databases: connections, the schema's scripts, and locking.</summary>
internal abstract class OutboxDialect : IAsyncDisposable
{
    /// <summary>The database kind, for messages.</summary>
    public abstract string Name { get; }

    /// <summary>
    /// The schema, one script per version: script i brings a database at version i to version i + 1. Scripts are only ever
    /// appended, never changed, so a database made by an older version migrates forward at start-up.
    /// </summary>
    public abstract IReadOnlyList<string> Migrations { get; }

    /// <summary>A new, closed connection to the configured database.</summary>
    public abstract DbConnection CreateConnection();

    /// <summary>True when <paramref name="connection"/> is of this database's provider.</summary>
    public abstract bool Accepts(DbConnection connection);

    /// <summary>Serialises schema migration between instances starting at once (inside the migration's transaction).</summary>
    public abstract Task LockSchemaAsync(DbTransaction transaction, CancellationToken cancellationToken);

    /// <summary>
    /// Called in the writer's transaction before rows of <paramref name="topic"/> are appended, so that rows of one topic
    /// become visible in the order of their ids (the relay never sees a later row of a topic before an earlier one commits).
    /// </summary>
    public abstract Task LockTopicForAppendAsync(DbTransaction transaction, string topic, CancellationToken cancellationToken);

    /// <summary>A start-up failure to open or migrate the database, rewritten to name the setting to check.</summary>
    public abstract InvalidOperationException DescribeStartupFailure(Exception exception);

    /// <inheritdoc />
    public virtual ValueTask DisposeAsync() => ValueTask.CompletedTask;

    /// <summary>Shared schema statements, after the dialect has replaced the type placeholders.</summary>
    protected static IReadOnlyList<string> SharedMigrations(string identity, string blob) =>
    [
        // Version 1: outbox rows and the inbox.
        $"""
        CREATE TABLE IF NOT EXISTS messaging_outbox (
            id {identity},
            topic TEXT NOT NULL,
            event_id TEXT NOT NULL,
            payload {blob} NOT NULL,
            created_at BIGINT NOT NULL,
            sent_at BIGINT NULL
        );
        CREATE INDEX IF NOT EXISTS ix_messaging_outbox_pending ON messaging_outbox (topic, id) WHERE sent_at IS NULL;
        CREATE INDEX IF NOT EXISTS ix_messaging_outbox_sent ON messaging_outbox (sent_at) WHERE sent_at IS NOT NULL;
        CREATE TABLE IF NOT EXISTS messaging_inbox (
            subscription TEXT NOT NULL,
            source TEXT NOT NULL,
            event_id TEXT NOT NULL,
            handled_at BIGINT NOT NULL,
            PRIMARY KEY (subscription, source, event_id)
        );
        CREATE INDEX IF NOT EXISTS ix_messaging_inbox_handled ON messaging_inbox (handled_at);
        """,
        // Version 2: per-topic leases, so that instances relay together and each topic keeps its order.
        """
        CREATE TABLE IF NOT EXISTS messaging_outbox_topics (
            topic TEXT NOT NULL PRIMARY KEY,
            owner TEXT NULL,
            lease_until BIGINT NOT NULL
        );
        """,
    ];
}
