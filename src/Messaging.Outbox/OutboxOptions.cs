namespace Messaging.Outbox;

/// <summary>The database that holds the outbox and inbox tables.</summary>
public enum OutboxDatabaseProvider
{
    /// <summary>An embedded SQLite file (<c>Microsoft.Data.Sqlite</c>), named by <see cref="OutboxOptions.FilePath"/>.</summary>
    Sqlite,

    /// <summary>PostgreSQL through Npgsql, reached with <see cref="OutboxOptions.ConnectionString"/>.</summary>
    PostgreSql,
}

/// <summary>Settings of the outbox, its relay and the inbox, bound from <c>Messaging:Outbox</c> and validated at start-up.</summary>
public sealed class OutboxOptions
{
    /// <summary>The configuration section, under <c>Messaging</c>.</summary>
    public const string SectionName = "Outbox";

    /// <summary>The database kind. Default <see cref="OutboxDatabaseProvider.Sqlite"/>.</summary>
    public OutboxDatabaseProvider Provider { get; set; } = OutboxDatabaseProvider.Sqlite;

    /// <summary>
    /// SQLite: the database file (created when missing; its folder must exist). Ignored when <see cref="ConnectionString"/>
    /// is set. <c>Messaging:Outbox:FilePath</c>.
    /// </summary>
    public string? FilePath { get; set; }

    /// <summary>
    /// The ADO.NET connection string: required for PostgreSQL (<c>Host=...;Database=...;Username=...;Password=...</c>);
    /// for SQLite an alternative to <see cref="FilePath"/>. <c>Messaging:Outbox:ConnectionString</c>.
    /// </summary>
    public string? ConnectionString { get; set; }

    /// <summary>Whether this process runs the relay that publishes outbox rows. Default true.</summary>
    public bool RelayEnabled { get; set; } = true;

    /// <summary>How often the relay looks for rows written by other processes. Default 1 s.</summary>
    public TimeSpan PollingInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Rows of one topic the relay reads, publishes and marks sent at a time. Default 100.</summary>
    public int BatchSize { get; set; } = 100;

    /// <summary>
    /// How long a relay owns a topic it claimed. Another instance takes the topic over only once the lease expired, so this
    /// bounds how long a crashed relay's topics wait. At least twice <c>Messaging:PublishTimeout</c>. Default 1 minute.
    /// </summary>
    public TimeSpan LeaseDuration { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>How long sent outbox rows are kept before they are deleted. Default 7 days.</summary>
    public TimeSpan Retention { get; set; } = TimeSpan.FromDays(7);

    /// <summary>
    /// How long the inbox remembers a handled event. A redelivery later than this runs the handler again, so keep it longer
    /// than the broker's longest redelivery (retention of unacknowledged messages). Default 7 days.
    /// </summary>
    public TimeSpan InboxRetention { get; set; } = TimeSpan.FromDays(7);

    /// <summary>How often expired sent rows and inbox rows are deleted. Default 5 minutes.</summary>
    public TimeSpan CleanupInterval { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>Uses an SQLite file (created when missing) for the outbox and inbox.</summary>
    /// <param name="filePath">The database file; its folder must exist.</param>
    /// <returns>These options.</returns>
    public OutboxOptions UseSqlite(string filePath)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(filePath);
        Provider = OutboxDatabaseProvider.Sqlite;
        FilePath = filePath;
        ConnectionString = null;
        return this;
    }

    /// <summary>Uses PostgreSQL (through Npgsql) for the outbox and inbox.</summary>
    /// <param name="connectionString">An Npgsql connection string.</param>
    /// <returns>These options.</returns>
    public OutboxOptions UsePostgreSql(string connectionString)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(connectionString);
        Provider = OutboxDatabaseProvider.PostgreSql;
        ConnectionString = connectionString;
        FilePath = null;
        return this;
    }
}
