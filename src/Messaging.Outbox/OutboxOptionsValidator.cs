using Messaging.Hosting;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Options;
using Npgsql;

namespace Messaging.Outbox;

/// <summary>Checks <c>Messaging:Outbox</c> at start-up; every failure names the setting.</summary>
internal sealed class OutboxOptionsValidator(IOptions<MessagingOptions> messaging) : IValidateOptions<OutboxOptions>
{
    private const string Prefix = "Messaging:Outbox:";

    public ValidateOptionsResult Validate(string? name, OutboxOptions options)
    {
        var failures = new List<string>();
        switch (options.Provider)
        {
            case OutboxDatabaseProvider.Sqlite:
                if (string.IsNullOrWhiteSpace(options.FilePath) && string.IsNullOrWhiteSpace(options.ConnectionString))
                {
                    failures.Add($"{Prefix}FilePath is required for the SQLite outbox (or set {Prefix}ConnectionString).");
                }
                else if (!string.IsNullOrWhiteSpace(options.ConnectionString))
                {
                    CheckConnectionString(() => new SqliteConnectionStringBuilder(options.ConnectionString), failures);
                }
                break;
            case OutboxDatabaseProvider.PostgreSql:
                if (string.IsNullOrWhiteSpace(options.ConnectionString))
                {
                    failures.Add($"{Prefix}ConnectionString is required for the PostgreSQL outbox.");
                }
                else
                {
                    CheckConnectionString(() => new NpgsqlConnectionStringBuilder(options.ConnectionString), failures);
                }
                break;
            default:
                failures.Add($"{Prefix}Provider '{options.Provider}' is not one of Sqlite, PostgreSql.");
                break;
        }
        Positive(options.PollingInterval, "PollingInterval", failures);
        Positive(options.LeaseDuration, "LeaseDuration", failures);
        Positive(options.Retention, "Retention", failures);
        Positive(options.InboxRetention, "InboxRetention", failures);
        Positive(options.CleanupInterval, "CleanupInterval", failures);
        // The relay renews its lease before a publish once a third of it has passed, and one publish may take up to
        // PublishTimeout: with a lease of at least twice that, the lease cannot run out while a publish is under way.
        var publishTimeout = messaging.Value.PublishTimeout;
        if (options.LeaseDuration > TimeSpan.Zero && options.LeaseDuration < 2 * publishTimeout)
        {
            failures.Add($"{Prefix}LeaseDuration ({options.LeaseDuration}) must be at least twice Messaging:PublishTimeout ({publishTimeout}), " +
                "so that no other instance takes a topic over while this one is still publishing to it.");
        }
        if (options.BatchSize is < 1 or > 10_000)
        {
            failures.Add($"{Prefix}BatchSize must be between 1 and 10000 (was {options.BatchSize}).");
        }
        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }

    private static void Positive(TimeSpan value, string setting, List<string> failures)
    {
        if (value <= TimeSpan.Zero)
        {
            failures.Add($"{Prefix}{setting} must be positive (was {value}).");
        }
    }

    private static void CheckConnectionString(Action parse, List<string> failures)
    {
        try
        {
            parse();
        }
        catch (ArgumentException ex)
        {
            failures.Add($"{Prefix}ConnectionString is not a valid connection string: {ex.Message}");
        }
    }
}
