using System.Data.Common;
using Messaging.Handling;
using Messaging.Outbox;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Messaging.ConformanceTests.Infrastructure;

/// <summary>
/// The database of one outbox case: an SQLite file in a temp folder, or a schema of its own in the PostgreSQL test
/// database (MESSAGING_POSTGRES, default what conformance-tests/brokers.sh creates), with an <c>effects</c> table where
/// handlers record what they did.
/// </summary>
public sealed class OutboxTestDatabase : IAsyncDisposable
{
    public const string DefaultPostgres = "Host=127.0.0.1;Port=5432;Username=messaging;Password=messaging;Database=messaging_tests";

    private readonly string? _folder;
    private readonly string? _schema;
    private readonly string _connectionString;

    private OutboxTestDatabase(OutboxDatabaseProvider provider)
    {
        Provider = provider;
        if (provider == OutboxDatabaseProvider.Sqlite)
        {
            _folder = Directory.CreateTempSubdirectory("messaging-outbox-ct-").FullName;
            _connectionString = new SqliteConnectionStringBuilder { DataSource = Path.Combine(_folder, "outbox.db"), DefaultTimeout = 60 }.ToString();
        }
        else
        {
            _schema = "ct_" + Guid.NewGuid().ToString("N")[..12];
            _connectionString = new NpgsqlConnectionStringBuilder(PostgresConnectionString) { SearchPath = _schema }.ToString();
        }
    }

    public OutboxDatabaseProvider Provider { get; }

    public static string PostgresConnectionString =>
        Environment.GetEnvironmentVariable("MESSAGING_POSTGRES") is { Length: > 0 } s ? s : DefaultPostgres;

    /// <summary>The outbox settings of a host on this database; <paramref name="relay"/> false for a process that dies before relaying.</summary>
    public Dictionary<string, string?> Settings(bool relay = true) => new()
    {
        ["Messaging:Outbox:Provider"] = Provider.ToString(),
        ["Messaging:Outbox:ConnectionString"] = _connectionString,
        ["Messaging:Outbox:RelayEnabled"] = relay ? "true" : "false",
        ["Messaging:Outbox:PollingInterval"] = "00:00:00.100",
        ["Messaging:Outbox:LeaseDuration"] = "00:01:00",
    };

    /// <summary>Null when the database is there; otherwise why not.</summary>
    public static async Task<string?> UnavailableReasonAsync(OutboxDatabaseProvider provider)
    {
        if (provider == OutboxDatabaseProvider.Sqlite)
        {
            return null;
        }
        try
        {
            await using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(PostgresConnectionString) { Timeout = 5 }.ToString());
            await connection.OpenAsync();
            return null;
        }
        catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException or TimeoutException)
        {
            return $"PostgreSQL is not reachable at MESSAGING_POSTGRES: {ex.Message}. Run conformance-tests/brokers.sh.";
        }
    }

    public static async Task<OutboxTestDatabase> CreateAsync(OutboxDatabaseProvider provider)
    {
        var database = new OutboxTestDatabase(provider);
        if (database._schema is not null)
        {
            await using var admin = new NpgsqlConnection(PostgresConnectionString);
            await admin.OpenAsync();
            await using var create = new NpgsqlCommand($"CREATE SCHEMA {database._schema}", admin);
            await create.ExecuteNonQueryAsync();
        }
        await database.ExecuteAsync("CREATE TABLE effects (event_id TEXT NOT NULL, host TEXT NOT NULL)");
        return database;
    }

    public async Task<DbConnection> OpenAsync()
    {
        DbConnection connection = Provider == OutboxDatabaseProvider.Sqlite ? new SqliteConnection(_connectionString) : new NpgsqlConnection(_connectionString);
        await connection.OpenAsync();
        return connection;
    }

    public async Task ExecuteAsync(string sql)
    {
        await using var connection = await OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        await command.ExecuteNonQueryAsync();
    }

    public async Task<long> CountAsync(string sql)
    {
        await using var connection = await OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        return Convert.ToInt64(await command.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture);
    }

    public async ValueTask DisposeAsync()
    {
        SqliteConnection.ClearAllPools();
        if (_folder is not null)
        {
            try
            {
                Directory.Delete(_folder, recursive: true);
            }
            catch (IOException)
            {
                // Still open somewhere; the temp folder is the system's to clean.
            }
        }
        if (_schema is not null)
        {
            await using var admin = new NpgsqlConnection(PostgresConnectionString);
            await admin.OpenAsync();
            await using var drop = new NpgsqlCommand($"DROP SCHEMA IF EXISTS {_schema} CASCADE", admin);
            await drop.ExecuteNonQueryAsync();
        }
    }
}

/// <summary>
/// The idempotent handler of the outbox cases: in the inbox's transaction it records its effect (one row per run of its
/// body); after the commit it hands the event to the probe, whose behaviour can hang until a crash (killed after the
/// commit, before the acknowledgement).
/// </summary>
public sealed class InboxProbeHandler(IOutboxDatabase database, IInbox inbox, Probe probe, HostIdentity host) : IdempotentCloudEventHandler(database, inbox)
{
    public override async Task HandleAsync(EventContext context, CancellationToken cancellationToken)
    {
        await base.HandleAsync(context, cancellationToken);
        await probe.RunAsync(context, host.Name, cancellationToken);
    }

    protected override async Task HandleAsync(EventContext context, DbTransaction transaction, CancellationToken cancellationToken)
    {
        await using var command = transaction.Connection!.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "INSERT INTO effects (event_id, host) VALUES (@id, @host)";
        var id = command.CreateParameter();
        id.ParameterName = "@id";
        id.Value = context.Event.Id!;
        command.Parameters.Add(id);
        var name = command.CreateParameter();
        name.ParameterName = "@host";
        name.Value = host.Name;
        command.Parameters.Add(name);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }
}
