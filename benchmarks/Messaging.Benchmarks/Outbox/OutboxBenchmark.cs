using System.Data.Common;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using CloudNative.CloudEvents;
using Messaging.Handling;
using Messaging.Hosting;
using Messaging.Outbox;
using Messaging.Publishing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Npgsql;

namespace Messaging.Benchmarks.Outbox;

/// <summary>
/// Outbox publish throughput against direct publish, and inbox handling against plain handling, on SQLite and on
/// PostgreSQL. Publishing: <c>writers</c> concurrent callers, one event per call (direct) or per committed transaction
/// (outbox), timed until the broker accepted every event (for the outbox: until the relay marked every row sent).
/// Handling: the events are published in batches and timed until every one was handled, by a handler that does nothing
/// (plain) or by an <see cref="IdempotentCloudEventHandler"/> whose transaction holds only the inbox row.
/// </summary>
internal sealed class OutboxBenchmark(string transport, Action<MessagingBuilder> addTransport, Func<string, Task> cleanup, string postgres, int events, int writers)
{
    private sealed record Database(string Name, Dictionary<string, string?> Settings, Func<Task> Drop);

    public async Task<string> RunAsync(CancellationToken cancellationToken)
    {
        var databases = new List<Database> { Sqlite() };
        var pg = await PostgresAsync(cancellationToken);
        if (pg is not null)
        {
            databases.Add(pg);
        }
        var rows = new List<(string Scenario, double PerSecond, double Baseline)>();
        try
        {
            var direct = await PublishDirectAsync(databases[0], cancellationToken);
            var plain = await HandleAsync(databases[0], inbox: false, cancellationToken);
            foreach (var database in databases)
            {
                rows.Add(($"outbox publish, {database.Name} (events/s)", await PublishThroughOutboxAsync(database, cancellationToken), direct));
                rows.Add(($"inbox handling, {database.Name} (events/s)", await HandleAsync(database, inbox: true, cancellationToken), plain));
            }
            var table = new StringBuilder();
            table.AppendLine(CultureInfo.InvariantCulture, $"### Outbox and inbox ({transport}, {events:N0} events, {writers} concurrent writers)");
            table.AppendLine();
            table.AppendLine("| scenario | this scenario | without outbox/inbox | ratio |");
            table.AppendLine("|---|---|---|---|");
            table.AppendLine(CultureInfo.InvariantCulture, $"| direct publish (events/s) | {direct:N0} | | |");
            table.AppendLine(CultureInfo.InvariantCulture, $"| plain handling (events/s) | {plain:N0} | | |");
            foreach (var (scenario, perSecond, baseline) in rows)
            {
                table.AppendLine(CultureInfo.InvariantCulture, $"| {scenario} | {perSecond:N0} | {baseline:N0} | {perSecond / baseline:0.00} |");
            }
            if (pg is null)
            {
                table.AppendLine();
                table.AppendLine("PostgreSQL was not reachable (MESSAGING_POSTGRES); its rows are missing.");
            }
            return table.ToString();
        }
        finally
        {
            foreach (var database in databases)
            {
                await database.Drop();
            }
        }
    }

    private static Database Sqlite()
    {
        var folder = Directory.CreateTempSubdirectory("messaging-outbox-bench-").FullName;
        return new Database("SQLite", new Dictionary<string, string?>
        {
            ["Messaging:Outbox:Provider"] = "Sqlite",
            ["Messaging:Outbox:FilePath"] = Path.Combine(folder, "bench.db"),
        }, () =>
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(folder, recursive: true);
            return Task.CompletedTask;
        });
    }

    private async Task<Database?> PostgresAsync(CancellationToken cancellationToken)
    {
        var schema = "bench_" + Guid.NewGuid().ToString("N")[..10];
        try
        {
            await using var connection = new NpgsqlConnection(postgres);
            await connection.OpenAsync(cancellationToken);
            await using var create = new NpgsqlCommand($"CREATE SCHEMA {schema}", connection);
            await create.ExecuteNonQueryAsync(cancellationToken);
        }
        catch (NpgsqlException)
        {
            return null;
        }
        return new Database("PostgreSQL", new Dictionary<string, string?>
        {
            ["Messaging:Outbox:Provider"] = "PostgreSql",
            ["Messaging:Outbox:ConnectionString"] = new NpgsqlConnectionStringBuilder(postgres) { SearchPath = schema }.ToString(),
        }, async () =>
        {
            await using var connection = new NpgsqlConnection(postgres);
            await connection.OpenAsync(CancellationToken.None);
            await using var drop = new NpgsqlCommand($"DROP SCHEMA {schema} CASCADE", connection);
            await drop.ExecuteNonQueryAsync(CancellationToken.None);
        });
    }

    private async Task<IHost> StartAsync(Database database, string topic, Action<MessagingBuilder> configure, CancellationToken cancellationToken)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(database.Settings);
        builder.Services.AddSingleton(new HandledCounter());
        var messaging = builder.Services.AddMessaging(builder.Configuration);
        addTransport(messaging);
        messaging.UseTransport(transport).AddTopic(topic).AddOutbox();
        configure(messaging);
        var host = builder.Build();
        await host.StartAsync(cancellationToken);
        return host;
    }

    private static CloudEvent NewEvent() => new()
    {
        Id = Guid.NewGuid().ToString(),
        Source = new Uri("urn:bench:outbox"),
        Type = "com.example.bench",
        DataContentType = "application/octet-stream",
        Data = new byte[1024],
    };

    private async Task RunWritersAsync(int count, Func<CloudEvent, Task> write, CancellationToken cancellationToken) =>
        await Task.WhenAll(Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
        {
            for (var i = w; i < count; i += writers)
            {
                await write(NewEvent());
            }
        }, cancellationToken)));

    private async Task<double> PublishDirectAsync(Database database, CancellationToken cancellationToken)
    {
        var topic = $"bench-{Guid.NewGuid():N}"[..18];
        var host = await StartAsync(database, topic, _ => { }, cancellationToken);
        try
        {
            var publisher = host.Services.GetRequiredService<IEventPublisher>();
            await RunWritersAsync(Math.Min(200, events), e => publisher.PublishAsync(topic, e, cancellationToken), cancellationToken); // warm-up
            var watch = Stopwatch.StartNew();
            await RunWritersAsync(events, e => publisher.PublishAsync(topic, e, cancellationToken), cancellationToken);
            return events / watch.Elapsed.TotalSeconds;
        }
        finally
        {
            await StopAsync(host, topic);
        }
    }

    private async Task<double> PublishThroughOutboxAsync(Database database, CancellationToken cancellationToken)
    {
        var topic = $"bench-{Guid.NewGuid():N}"[..18];
        var host = await StartAsync(database, topic, _ => { }, cancellationToken);
        try
        {
            var db = host.Services.GetRequiredService<IOutboxDatabase>();
            var outbox = host.Services.GetRequiredService<IOutbox>();
            async Task WriteAsync(CloudEvent e)
            {
                await using var connection = await db.OpenConnectionAsync(cancellationToken);
                await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
                await outbox.PublishAsync(topic, e, transaction, cancellationToken);
                await transaction.CommitAsync(cancellationToken);
            }
            await RunWritersAsync(Math.Min(200, events), WriteAsync, cancellationToken); // warm-up
            await UntilAsync(() => UnsentAsync(db, cancellationToken), n => n == 0, cancellationToken);
            var watch = Stopwatch.StartNew();
            await RunWritersAsync(events, WriteAsync, cancellationToken);
            await UntilAsync(() => UnsentAsync(db, cancellationToken), n => n == 0, cancellationToken);
            return events / watch.Elapsed.TotalSeconds;
        }
        finally
        {
            await StopAsync(host, topic);
        }
    }

    private async Task<double> HandleAsync(Database database, bool inbox, CancellationToken cancellationToken)
    {
        var topic = $"bench-{Guid.NewGuid():N}"[..18];
        var host = await StartAsync(database, topic, m => m.AddSubscription(topic + "-sub", topic, s =>
        {
            if (inbox)
            {
                s.HandleCloudEvents<InboxOnlyHandler>();
            }
            else
            {
                s.HandleCloudEvents<PlainHandler>();
            }
        }), cancellationToken);
        try
        {
            var publisher = host.Services.GetRequiredService<IEventPublisher>();
            var counter = host.Services.GetRequiredService<HandledCounter>();
            async Task PublishAndDrainAsync(int count)
            {
                var target = counter.Count + count;
                for (var sent = 0; sent < count; sent += 500)
                {
                    await publisher.PublishBatchAsync(topic, Enumerable.Range(0, Math.Min(500, count - sent)).Select(_ => NewEvent()).ToList(), cancellationToken);
                }
                await UntilAsync(() => Task.FromResult((long)counter.Count), n => n >= target, cancellationToken);
            }
            await PublishAndDrainAsync(Math.Min(200, events)); // warm-up
            var watch = Stopwatch.StartNew();
            await PublishAndDrainAsync(events);
            return events / watch.Elapsed.TotalSeconds;
        }
        finally
        {
            await StopAsync(host, topic);
        }
    }

    private async Task StopAsync(IHost host, string topic)
    {
        await host.StopAsync(CancellationToken.None);
        host.Dispose();
        await cleanup(topic);
    }

    private static async Task<long> UnsentAsync(IOutboxDatabase database, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT COUNT(*) FROM messaging_outbox WHERE sent_at IS NULL";
        return Convert.ToInt64(await command.ExecuteScalarAsync(cancellationToken), CultureInfo.InvariantCulture);
    }

    private static async Task UntilAsync(Func<Task<long>> probe, Func<long, bool> done, CancellationToken cancellationToken)
    {
        while (!done(await probe()))
        {
            await Task.Delay(10, cancellationToken);
        }
    }

    private sealed class HandledCounter
    {
        private int _count;

        public int Count => Volatile.Read(ref _count);

        public void Add() => Interlocked.Increment(ref _count);
    }

    private sealed class PlainHandler(HandledCounter counter) : ICloudEventHandler
    {
        public Task HandleAsync(EventContext context, CancellationToken cancellationToken)
        {
            counter.Add();
            return Task.CompletedTask;
        }
    }

    private sealed class InboxOnlyHandler(IOutboxDatabase database, IInbox inbox, HandledCounter counter) : IdempotentCloudEventHandler(database, inbox)
    {
        protected override Task HandleAsync(EventContext context, DbTransaction transaction, CancellationToken cancellationToken)
        {
            counter.Add();
            return Task.CompletedTask;
        }
    }
}
