using System.Data.Common;
using System.Text;
using Npgsql;

namespace Messaging.Outbox.Storage;

/// <summary>PostgreSQL through Npgsql: one pooled data source for the outbox, the inbox and the relay.</summary>
internal sealed class PostgreSqlOutboxDialect : OutboxDialect
{
    // An arbitrary constant: the advisory lock every instance takes while it migrates the schema.
    private const long SchemaLockKey = 0x6d7367_6f7574626f;

    private readonly NpgsqlDataSource _dataSource;
    private readonly string _described;

    public PostgreSqlOutboxDialect(OutboxOptions options)
    {
        var builder = new NpgsqlConnectionStringBuilder(options.ConnectionString);
        // Never the password: the message may end up in a log.
        _described = $"Host={builder.Host};Port={builder.Port};Database={builder.Database};Username={builder.Username}";
        _dataSource = NpgsqlDataSource.Create(builder);
        Migrations = [.. SharedMigrations("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "BYTEA")];
    }

    public override string Name => "PostgreSQL";

    public override IReadOnlyList<string> Migrations { get; }

    public override DbConnection CreateConnection() => _dataSource.CreateConnection();

    public override bool Accepts(DbConnection connection) => connection is NpgsqlConnection;

    public override async Task LockSchemaAsync(DbTransaction transaction, CancellationToken cancellationToken)
    {
        await using var command = transaction.Connection!.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "SELECT pg_advisory_xact_lock(@key)";
        command.Parameters.Add(new NpgsqlParameter("key", SchemaLockKey));
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    // Identity values are handed out at insert, not at commit: two writers of one topic could commit ids 2 then 1, and a relay
    // reading between the commits would send 2 before 1. Writers of one topic take a transaction-scoped advisory lock first,
    // so they commit in the order they got their ids. Writers of different topics do not wait for each other.
    public override async Task LockTopicForAppendAsync(DbTransaction transaction, string topic, CancellationToken cancellationToken)
    {
        await using var command = transaction.Connection!.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "SELECT pg_advisory_xact_lock(@key)";
        command.Parameters.Add(new NpgsqlParameter("key", TopicKey(topic)));
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    public override InvalidOperationException DescribeStartupFailure(Exception exception) =>
        new($"The PostgreSQL outbox database could not be opened or migrated: {Sentence(exception.Message)} " +
            $"Check Messaging:Outbox:ConnectionString ({_described}): the server must be reachable, the database must exist and " +
            "the user must be allowed to create tables in it.", exception);

    public override ValueTask DisposeAsync() => _dataSource.DisposeAsync();

    /// <summary>A stable 64-bit FNV-1a hash of the topic, the same in every process.</summary>
    internal static long TopicKey(string topic)
    {
        var hash = 14695981039346656037UL;
        foreach (var b in Encoding.UTF8.GetBytes("messaging_outbox:" + topic))
        {
            hash = (hash ^ b) * 1099511628211UL;
        }
        return unchecked((long)hash);
    }

    private static string Sentence(string message) => message.TrimEnd().EndsWith('.') ? message.TrimEnd() : message.TrimEnd() + ".";
}
