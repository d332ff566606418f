using Npgsql;

namespace Messaging.Outbox.Tests;

/// <summary>A fresh, empty database for one test, and the settings that point the outbox at it.</summary>
public interface ITestDatabase : IAsyncDisposable
{
    IDictionary<string, string?> Settings { get; }

    /// <summary>Settings that name a database that does not exist, and the setting the start-up error must name.</summary>
    (IDictionary<string, string?> Settings, string Setting, string? Secret) Missing { get; }

    /// <summary>Points an EF Core context at the same database.</summary>
    void UseFor(Microsoft.EntityFrameworkCore.DbContextOptionsBuilder builder);
}

/// <summary>An SQLite file in a folder of its own under the temp folder.</summary>
public sealed class SqliteTestDatabase : ITestDatabase
{
    private readonly string _folder = Directory.CreateTempSubdirectory("messaging-outbox-").FullName;

    public IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Messaging:Outbox:Provider"] = "Sqlite",
        ["Messaging:Outbox:FilePath"] = Path.Combine(_folder, "outbox.db"),
    };

    public void UseFor(Microsoft.EntityFrameworkCore.DbContextOptionsBuilder builder) =>
        Microsoft.EntityFrameworkCore.SqliteDbContextOptionsBuilderExtensions.UseSqlite(builder, $"Data Source={Path.Combine(_folder, "outbox.db")}");

    public (IDictionary<string, string?>, string, string?) Missing => (new Dictionary<string, string?>
    {
        ["Messaging:Outbox:Provider"] = "Sqlite",
        ["Messaging:Outbox:FilePath"] = Path.Combine(_folder, "no-such-folder", "outbox.db"),
    }, "Messaging:Outbox:FilePath", null);

    public ValueTask DisposeAsync()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try
        {
            Directory.Delete(_folder, recursive: true);
        }
        catch (IOException)
        {
            // A file still open by a pooled connection; the temp folder is cleaned by the system.
        }
        return ValueTask.CompletedTask;
    }
}

/// <summary>
/// A schema of its own in the PostgreSQL test database (MESSAGING_POSTGRES, default the one conformance-tests/brokers.sh
/// creates), dropped afterwards.
/// </summary>
public sealed class PostgreSqlTestDatabase : ITestDatabase
{
    public const string DefaultConnectionString = "Host=127.0.0.1;Port=5432;Username=messaging;Password=messaging;Database=messaging_tests";

    private readonly string _schema = "t_" + Guid.NewGuid().ToString("N")[..12];

    public static string ConnectionString => Environment.GetEnvironmentVariable("MESSAGING_POSTGRES") is { Length: > 0 } s ? s : DefaultConnectionString;

    private string SchemaConnectionString => new NpgsqlConnectionStringBuilder(ConnectionString) { SearchPath = _schema }.ToString();

    public IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Messaging:Outbox:Provider"] = "PostgreSql",
        ["Messaging:Outbox:ConnectionString"] = SchemaConnectionString,
    };

    public void UseFor(Microsoft.EntityFrameworkCore.DbContextOptionsBuilder builder) =>
        Microsoft.EntityFrameworkCore.NpgsqlDbContextOptionsBuilderExtensions.UseNpgsql(builder, SchemaConnectionString);

    public (IDictionary<string, string?>, string, string?) Missing
    {
        get
        {
            var builder = new NpgsqlConnectionStringBuilder(ConnectionString) { Database = "no_such_database_" + _schema };
            return (new Dictionary<string, string?>
            {
                ["Messaging:Outbox:Provider"] = "PostgreSql",
                ["Messaging:Outbox:ConnectionString"] = builder.ToString(),
            }, "Messaging:Outbox:ConnectionString", builder.Password);
        }
    }

    public static async Task<PostgreSqlTestDatabase> CreateAsync()
    {
        var database = new PostgreSqlTestDatabase();
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"CREATE SCHEMA {database._schema}", connection);
        await command.ExecuteNonQueryAsync();
        return database;
    }

    /// <summary>Null when the server answers; otherwise why not.</summary>
    public static async Task<string?> UnavailableReasonAsync()
    {
        try
        {
            await using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(ConnectionString) { Timeout = 5 }.ToString());
            await connection.OpenAsync();
            return null;
        }
        catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException or TimeoutException)
        {
            return $"PostgreSQL is not reachable at MESSAGING_POSTGRES ({new NpgsqlConnectionStringBuilder(ConnectionString) { Password = null }}): {ex.Message}. " +
                "Run conformance-tests/brokers.sh.";
        }
    }

    public async ValueTask DisposeAsync()
    {
        NpgsqlConnection.ClearAllPools();
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"DROP SCHEMA IF EXISTS {_schema} CASCADE", connection);
        await command.ExecuteNonQueryAsync();
    }
}
