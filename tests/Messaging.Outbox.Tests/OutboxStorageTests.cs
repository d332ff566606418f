using System.Data.Common;
using CloudNative.CloudEvents;
using Messaging.Outbox.Storage;
using Messaging.Publishing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Messaging.Outbox.Tests;

/// <summary>The outbox and inbox storage suite: written once, run unchanged on SQLite and on PostgreSQL.</summary>
public abstract partial class OutboxStorageTests : IAsyncLifetime
{
    private readonly List<IHost> _hosts = [];
    private ITestDatabase? _database;

    protected static CancellationToken Ct => TestContext.Current.CancellationToken;

    protected ITestDatabase Database => _database ?? throw new InvalidOperationException("not initialised");

    protected RecordingPublisher Publisher { get; } = new();

    protected abstract Task<ITestDatabase> CreateDatabaseAsync();

    public async ValueTask InitializeAsync() => _database = await CreateDatabaseAsync();

    public async ValueTask DisposeAsync()
    {
        foreach (var host in _hosts)
        {
            try
            {
                await host.StopAsync(CancellationToken.None);
            }
            catch (Exception ex) when (ex is InvalidOperationException or ArgumentNullException or OperationCanceledException)
            {
                // A host whose start-up the test made fail.
            }
            host.Dispose();
        }
        if (_database is not null)
        {
            await _database.DisposeAsync();
        }
        GC.SuppressFinalize(this);
    }

    /// <summary>A service with the outbox on the test's database; <paramref name="settings"/> override the defaults.</summary>
    protected IHost Build(string relay = "relay", IDictionary<string, string?>? settings = null, IDictionary<string, string?>? database = null)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        var all = new Dictionary<string, string?>(database ?? Database.Settings)
        {
            ["Messaging:Outbox:PollingInterval"] = "00:00:00.050",
        };
        foreach (var (key, value) in settings ?? new Dictionary<string, string?>())
        {
            all[key] = value;
        }
        builder.Configuration.AddInMemoryCollection(all);
        builder.Services.AddMessaging(builder.Configuration).AddOutbox();
        builder.Services.AddSingleton(Publisher.For(relay));
        var host = builder.Build();
        _hosts.Add(host);
        return host;
    }

    protected async Task<IHost> StartAsync(string relay = "relay", IDictionary<string, string?>? settings = null)
    {
        var host = Build(relay, settings);
        await host.StartAsync(Ct);
        return host;
    }

    protected static CloudEvent NewEvent(string? id = null) => new()
    {
        Id = id ?? Guid.NewGuid().ToString(),
        Source = new Uri("urn:outbox:test"),
        Type = "com.example.outbox",
        DataContentType = "application/json",
        Data = "{\"n\":1}"u8.ToArray(),
    };

    /// <summary>Writes events in one transaction through the host's outbox, committing unless told not to.</summary>
    protected static async Task WriteAsync(IHost host, string topic, IEnumerable<CloudEvent> events, bool commit = true)
    {
        var database = host.Services.GetRequiredService<IOutboxDatabase>();
        var outbox = host.Services.GetRequiredService<IOutbox>();
        await using var connection = await database.OpenConnectionAsync(Ct);
        await using var transaction = await connection.BeginTransactionAsync(Ct);
        await outbox.PublishBatchAsync(topic, events, transaction, Ct);
        if (commit)
        {
            await transaction.CommitAsync(Ct);
        }
    }

    protected static async Task<long> CountAsync(IHost host, string sql)
    {
        await using var connection = await host.Services.GetRequiredService<IOutboxDatabase>().OpenConnectionAsync(Ct);
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        return Convert.ToInt64(await command.ExecuteScalarAsync(Ct), System.Globalization.CultureInfo.InvariantCulture);
    }

    [Fact(Timeout = 60_000)]
    public async Task Schema_is_created_at_start_up()
    {
        var host = await StartAsync();
        Assert.Equal(2, await CountAsync(host, "SELECT MAX(version) FROM messaging_schema"));
        Assert.Equal(0, await CountAsync(host, "SELECT COUNT(*) FROM messaging_outbox"));
        Assert.Equal(0, await CountAsync(host, "SELECT COUNT(*) FROM messaging_inbox"));
        Assert.Equal(0, await CountAsync(host, "SELECT COUNT(*) FROM messaging_outbox_topics"));
        // A second start on the same database finds it current.
        var again = await StartAsync("second");
        Assert.Equal(1, await CountAsync(again, "SELECT COUNT(*) FROM messaging_schema"));
    }

    [Fact(Timeout = 60_000)]
    public async Task Schema_of_an_older_version_is_migrated_at_start_up_and_its_rows_are_relayed()
    {
        var old = Build(settings: new Dictionary<string, string?> { ["Messaging:Outbox:RelayEnabled"] = "false" });
        var store = old.Services.GetRequiredService<OutboxStore>();
        Assert.Equal(0, await store.MigrateAsync(Ct, targetVersion: 1)); // what version 1 of the library made
        Assert.Equal(1, await CountAsync(old, "SELECT MAX(version) FROM messaging_schema"));
        var sent = NewEvent();
        await WriteAsync(old, "migrated", [sent]);

        var host = await StartAsync();
        Assert.Equal(2, await CountAsync(host, "SELECT MAX(version) FROM messaging_schema"));
        await Wait.UntilAsync(() => Publisher.Sent.Any(s => s.EventId == sent.Id), "the row written before the migration is relayed");
    }

    [Fact(Timeout = 60_000)]
    public async Task Committed_rows_are_published_and_marked_sent_rolled_back_rows_never()
    {
        var host = await StartAsync();
        var kept = NewEvent();
        var dropped = NewEvent();
        await WriteAsync(host, "commits", [dropped], commit: false);
        await WriteAsync(host, "commits", [kept]);
        await Wait.UntilAsync(async () => await CountAsync(host, "SELECT COUNT(*) FROM messaging_outbox WHERE sent_at IS NULL") == 0,
            "every committed row is marked sent");
        Assert.Equal([kept.Id!], Publisher.Sent.Select(s => s.EventId));
        Assert.Equal(1, await CountAsync(host, "SELECT COUNT(*) FROM messaging_outbox"));
    }

    [Fact(Timeout = 60_000)]
    public async Task A_relayed_event_carries_the_trace_context_of_the_unit_of_work_that_wrote_it()
    {
        using var source = new System.Diagnostics.ActivitySource("outbox-tests-" + Guid.NewGuid());
        using var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = s => s.Name == source.Name || s.Name == Messaging.Diagnostics.MessagingDiagnostics.SourceName,
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) => System.Diagnostics.ActivitySamplingResult.AllDataAndRecorded,
        };
        System.Diagnostics.ActivitySource.AddActivityListener(listener);
        var host = await StartAsync();
        var sent = NewEvent();
        string traceId;
        using (var request = source.StartActivity("place order"))
        {
            traceId = request!.TraceId.ToHexString();
            await WriteAsync(host, "traced", [sent]);
        }
        await Wait.UntilAsync(() => Publisher.Events.ContainsKey(sent.Id!), "the event is relayed");
        var traceParent = Assert.IsType<string>(Publisher.Events[sent.Id!][Messaging.Diagnostics.MessagingDiagnostics.TraceParentAttribute]);
        Assert.Contains(traceId, traceParent, StringComparison.Ordinal);
    }

    [Fact(Timeout = 60_000)]
    public async Task Each_topic_is_published_in_write_order()
    {
        var writer = await StartAsync(settings: new Dictionary<string, string?> { ["Messaging:Outbox:BatchSize"] = "7" });
        var expected = new Dictionary<string, List<string>> { ["topic-a"] = [], ["topic-b"] = [], ["topic-c"] = [] };
        for (var i = 0; i < 30; i++)
        {
            var topic = "topic-" + "abc"[i % 3];
            var events = Enumerable.Range(0, 3).Select(_ => NewEvent()).ToList();
            expected[topic].AddRange(events.Select(e => e.Id!));
            await WriteAsync(writer, topic, events);
        }
        await Wait.UntilAsync(() => Publisher.Sent.Count >= 90, "all 90 events are published");
        foreach (var (topic, ids) in expected)
        {
            Assert.Equal(ids, Publisher.Sent.Where(s => s.Topic == topic).Select(s => s.EventId));
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task Concurrent_relays_send_every_row_once_in_topic_order()
    {
        var settings = new Dictionary<string, string?> { ["Messaging:Outbox:BatchSize"] = "5", ["Messaging:Outbox:PollingInterval"] = "00:00:00.010" };
        var relays = new List<IHost>();
        for (var r = 0; r < 3; r++)
        {
            relays.Add(await StartAsync($"relay{r}", settings));
        }
        // Publishing yields, so relays interleave their passes; topics spread over relays.
        Publisher.BeforePublish = async (_, _) => await Task.Yield();
        var topics = new[] { "topic-1", "topic-2", "topic-3", "topic-4" };
        var expected = topics.ToDictionary(t => t, _ => new List<string>());
        var writers = Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
        {
            for (var i = 0; i < 25; i++)
            {
                var topic = topics[(w + i) % topics.Length];
                var events = Enumerable.Range(0, 4).Select(_ => NewEvent()).ToList();
                // Several writers append to one topic: the order to keep is the commit order, recorded under a lock
                // around the commit.
                await WriteAsync(relays[w % relays.Count], topic, events);
                lock (expected)
                {
                    expected[topic].AddRange(events.Select(e => e.Id!));
                }
            }
        }, Ct)).ToArray();
        await Task.WhenAll(writers);
        await Wait.UntilAsync(() => Publisher.Sent.Count >= 400, "all 400 events are published", TimeSpan.FromSeconds(60));
        await Wait.UntilAsync(async () => await CountAsync(relays[0], "SELECT COUNT(*) FROM messaging_outbox WHERE sent_at IS NULL") == 0,
            "every row is marked sent");
        var sent = Publisher.Sent.ToList();
        Assert.Equal(400, sent.Count);
        Assert.Equal(400, sent.Select(s => s.EventId).Distinct().Count());
        foreach (var topic in topics)
        {
            var published = sent.Where(s => s.Topic == topic).Select(s => s.EventId).ToList();
            Assert.Equal(expected[topic].Order(), published.Order());
        }
        TestContext.Current.TestOutputHelper?.WriteLine(string.Join(", ", sent.GroupBy(s => s.Relay).Select(g => $"{g.Key}: {g.Count()}")));
    }

    [Fact(Timeout = 60_000)]
    public async Task A_topic_leased_by_a_dead_relay_is_taken_over_when_the_lease_expires()
    {
        var host = await StartAsync(settings: new Dictionary<string, string?> { ["Messaging:Outbox:RelayEnabled"] = "false" });
        var store = host.Services.GetRequiredService<OutboxStore>();
        await using (var connection = await host.Services.GetRequiredService<IOutboxDatabase>().OpenConnectionAsync(Ct))
        {
            var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            Assert.True(await store.TryLeaseAsync(connection, "orphaned", "dead-relay", now, now + 1500, Ct));
            Assert.False(await store.TryLeaseAsync(connection, "orphaned", "another", now, now + 1500, Ct));
        }
        var sent = NewEvent();
        await WriteAsync(host, "orphaned", [sent]);
        var started = DateTimeOffset.UtcNow;
        await StartAsync("survivor");
        await Wait.UntilAsync(() => Publisher.Sent.Any(s => s.EventId == sent.Id), "the survivor relays the orphaned topic");
        Assert.True(DateTimeOffset.UtcNow - started > TimeSpan.FromMilliseconds(500), "the topic was taken before its lease expired");
    }

    [Fact(Timeout = 60_000)]
    public async Task A_failed_publish_keeps_the_row_and_it_is_published_later_in_order()
    {
        var failures = 2;
        Publisher.BeforePublish = (_, e) => e.Id == "second" && Interlocked.Decrement(ref failures) >= 0
            ? throw new EventPublishException("broker unavailable", null, isTransient: true)
            : Task.CompletedTask;
        var host = await StartAsync();
        await WriteAsync(host, "flaky", [NewEvent("first"), NewEvent("second"), NewEvent("third")]);
        await Wait.UntilAsync(() => Publisher.Sent.Count >= 3, "all three are published", TimeSpan.FromSeconds(45));
        Assert.Equal(["first", "second", "third"], Publisher.Sent.Select(s => s.EventId));
    }

    [Fact(Timeout = 60_000)]
    public async Task Sent_rows_and_inbox_rows_are_deleted_after_their_retention_unsent_rows_never()
    {
        var host = await StartAsync(settings: new Dictionary<string, string?>
        {
            ["Messaging:Outbox:Retention"] = "00:00:00.300",
            ["Messaging:Outbox:InboxRetention"] = "00:00:00.300",
            ["Messaging:Outbox:CleanupInterval"] = "00:00:00.100",
        });
        Publisher.BeforePublish = (topic, _) => topic == "stuck" ? throw new EventPublishException("no", null, isTransient: true) : Task.CompletedTask;
        await WriteAsync(host, "kept", [NewEvent(), NewEvent()]);
        await WriteAsync(host, "stuck", [NewEvent()]);
        await MarkHandledAsync(host, "sub", NewEvent());
        Assert.Equal(1, await CountAsync(host, "SELECT COUNT(*) FROM messaging_inbox"));
        await Wait.UntilAsync(async () => await CountAsync(host, "SELECT COUNT(*) FROM messaging_outbox WHERE topic = 'kept'") == 0,
            "the sent rows are deleted");
        await Wait.UntilAsync(async () => await CountAsync(host, "SELECT COUNT(*) FROM messaging_inbox") == 0, "the inbox row is deleted");
        Assert.Equal(1, await CountAsync(host, "SELECT COUNT(*) FROM messaging_outbox WHERE topic = 'stuck'"));
    }

    private static async Task<bool> MarkHandledAsync(IHost host, string subscription, CloudEvent cloudEvent, bool commit = true)
    {
        var inbox = host.Services.GetRequiredService<IInbox>();
        await using var connection = await host.Services.GetRequiredService<IOutboxDatabase>().OpenConnectionAsync(Ct);
        await using var transaction = await connection.BeginTransactionAsync(Ct);
        var first = await inbox.TryMarkHandledAsync(subscription, cloudEvent, transaction, Ct);
        if (commit)
        {
            await transaction.CommitAsync(Ct);
        }
        return first;
    }

    [Fact(Timeout = 60_000)]
    public async Task Inbox_recognises_an_event_already_handled_by_the_subscription()
    {
        var host = await StartAsync();
        var handled = NewEvent();
        Assert.True(await MarkHandledAsync(host, "billing", handled, commit: false), "first sight");
        Assert.True(await MarkHandledAsync(host, "billing", handled), "a rolled-back handling left nothing behind");
        Assert.False(await MarkHandledAsync(host, "billing", handled), "a redelivery is recognised");
        Assert.True(await MarkHandledAsync(host, "shipping", handled), "another subscription handles it for itself");
        var sameIdOtherSource = NewEvent(handled.Id);
        sameIdOtherSource.Source = new Uri("urn:another:source");
        Assert.True(await MarkHandledAsync(host, "billing", sameIdOtherSource), "the key is source + id");
    }

    [Fact(Timeout = 60_000)]
    public async Task Inbox_lets_one_of_two_concurrent_handlings_of_an_event_through()
    {
        var host = await StartAsync();
        var inbox = host.Services.GetRequiredService<IInbox>();
        var database = host.Services.GetRequiredService<IOutboxDatabase>();
        var handled = NewEvent();
        await using var first = await database.OpenConnectionAsync(Ct);
        await using var firstTransaction = await first.BeginTransactionAsync(Ct);
        Assert.True(await inbox.TryMarkHandledAsync("sub", handled, firstTransaction, Ct));
        // The second handling waits (SQLite: for the write lock; PostgreSQL: on the key) until the first commits.
        var second = Task.Run(() => MarkHandledAsync(host, "sub", handled), Ct);
        await firstTransaction.CommitAsync(Ct);
        Assert.False(await second.WaitAsync(TimeSpan.FromSeconds(30), Ct));
    }

    [Fact(Timeout = 60_000)]
    public async Task Start_up_fails_naming_the_setting_when_the_database_is_missing()
    {
        var (settings, setting, secret) = Database.Missing;
        var host = Build(database: settings);
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => host.StartAsync(Ct));
        Assert.Contains(setting, error.Message, StringComparison.Ordinal);
        if (secret is not null)
        {
            Assert.DoesNotContain("Password", error.Message, StringComparison.OrdinalIgnoreCase);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task Start_up_fails_naming_the_setting_when_it_is_missing_or_invalid()
    {
        var provider = Database.Settings["Messaging:Outbox:Provider"];
        var missing = Build(database: new Dictionary<string, string?> { ["Messaging:Outbox:Provider"] = provider });
        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => missing.StartAsync(Ct));
        Assert.Contains(provider == "Sqlite" ? "Messaging:Outbox:FilePath" : "Messaging:Outbox:ConnectionString", error.Message, StringComparison.Ordinal);

        var invalid = Build(settings: new Dictionary<string, string?> { ["Messaging:Outbox:BatchSize"] = "0", ["Messaging:Outbox:LeaseDuration"] = "-00:00:01" });
        error = await Assert.ThrowsAsync<OptionsValidationException>(() => invalid.StartAsync(Ct));
        Assert.Contains("Messaging:Outbox:BatchSize", error.Message, StringComparison.Ordinal);
        Assert.Contains("Messaging:Outbox:LeaseDuration", error.Message, StringComparison.Ordinal);

        var shortLease = Build(settings: new Dictionary<string, string?> { ["Messaging:PublishTimeout"] = "00:00:20", ["Messaging:Outbox:LeaseDuration"] = "00:00:30" });
        error = await Assert.ThrowsAsync<OptionsValidationException>(() => shortLease.StartAsync(Ct));
        Assert.Contains("Messaging:Outbox:LeaseDuration (00:00:30) must be at least twice Messaging:PublishTimeout (00:00:20)", error.Message, StringComparison.Ordinal);
    }

    [Fact(Timeout = 60_000)]
    public async Task Outbox_refuses_a_transaction_that_is_not_on_its_database()
    {
        var host = await StartAsync();
        var outbox = host.Services.GetRequiredService<IOutbox>();
        var provider = Database.Settings["Messaging:Outbox:Provider"];
        await using DbConnection other = provider == "Sqlite" ? new Npgsql.NpgsqlConnection() : new Microsoft.Data.Sqlite.SqliteConnection("Data Source=:memory:");
        if (other is Microsoft.Data.Sqlite.SqliteConnection)
        {
            await other.OpenAsync(Ct);
            await using var transaction = await other.BeginTransactionAsync(Ct);
            var error = await Assert.ThrowsAsync<ArgumentException>(() => outbox.PublishAsync("topic-t", NewEvent(), transaction, Ct));
            Assert.Contains("Messaging:Outbox:Provider", error.Message, StringComparison.Ordinal);
        }
        await using var connection = await host.Services.GetRequiredService<IOutboxDatabase>().OpenConnectionAsync(Ct);
        await using var committed = await connection.BeginTransactionAsync(Ct);
        await committed.CommitAsync(Ct);
        await Assert.ThrowsAnyAsync<Exception>(() => outbox.PublishAsync("topic-t", NewEvent(), committed, Ct));
    }
}

public sealed class SqliteOutboxStorageTests : OutboxStorageTests
{
    protected override Task<ITestDatabase> CreateDatabaseAsync() => Task.FromResult<ITestDatabase>(new SqliteTestDatabase());
}

public sealed class PostgreSqlOutboxStorageTests : OutboxStorageTests
{
    protected override async Task<ITestDatabase> CreateDatabaseAsync()
    {
        if (await PostgreSqlTestDatabase.UnavailableReasonAsync() is { } reason)
        {
            if (Required())
            {
                Assert.Fail($"PostgreSQL is required by MESSAGING_CONFORMANCE_REQUIRE but unavailable: {reason}");
            }
            Assert.Skip(reason);
        }
        return await PostgreSqlTestDatabase.CreateAsync();
    }

    private static bool Required()
    {
        var required = Environment.GetEnvironmentVariable("MESSAGING_CONFORMANCE_REQUIRE");
        return !string.IsNullOrWhiteSpace(required) && required.Split(',', StringSplitOptions.TrimEntries)
            .Any(r => r.Equals("all", StringComparison.OrdinalIgnoreCase) || r.Equals("postgresql", StringComparison.OrdinalIgnoreCase));
    }
}
