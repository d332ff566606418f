using System.Data.Common;
using Microsoft.Data.Sqlite;

namespace Messaging.Outbox.Storage;

/// <summary>
/// SQLite: one writer at a time. Transactions begin <c>IMMEDIATE</c> (Microsoft.Data.Sqlite's default), so a writer waits
/// for the write lock up to the command timeout instead of failing on a read-to-write upgrade; the file is in WAL mode so
/// readers do not wait for the writer.
/// </summary>
internal sealed class SqliteOutboxDialect : OutboxDialect
{
    private readonly string _connectionString;
    private readonly string _setting;

    public SqliteOutboxDialect(OutboxOptions options)
    {
        if (!string.IsNullOrWhiteSpace(options.ConnectionString))
        {
            _connectionString = options.ConnectionString;
            _setting = "Messaging:Outbox:ConnectionString";
        }
        else
        {
            _connectionString = new SqliteConnectionStringBuilder
            {
                DataSource = options.FilePath,
                Mode = SqliteOpenMode.ReadWriteCreate,
                Pooling = true,
                DefaultTimeout = 30,
            }.ToString();
            _setting = $"Messaging:Outbox:FilePath ('{options.FilePath}')";
        }
        Migrations = [.. SharedMigrations("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB")];
    }

    public override string Name => "SQLite";

    public override IReadOnlyList<string> Migrations { get; }

    public override DbConnection CreateConnection() => new SqliteConnection(_connectionString);

    public override bool Accepts(DbConnection connection) => connection is SqliteConnection;

    // BEGIN IMMEDIATE already holds the database's only write lock.
    public override Task LockSchemaAsync(DbTransaction transaction, CancellationToken cancellationToken) => Task.CompletedTask;

    // One writer at a time: ids are handed out in commit order already.
    public override Task LockTopicForAppendAsync(DbTransaction transaction, string topic, CancellationToken cancellationToken) => Task.CompletedTask;

    public override InvalidOperationException DescribeStartupFailure(Exception exception) =>
        new($"The SQLite outbox database could not be opened or migrated: {Sentence(exception.Message)} Check {_setting}: the folder must exist " +
            "and be writable by this process.", exception);

    private static string Sentence(string message) => message.TrimEnd().EndsWith('.') ? message.TrimEnd() : message.TrimEnd() + ".";
}
