using System.Collections.Concurrent;
using CloudNative.CloudEvents;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.Hosting;
using Messaging.Outbox;
using Messaging.Policy;
using Microsoft.Extensions.DependencyInjection;

namespace Messaging.ConformanceTests.Cases;

/// <summary>
/// The transactional outbox and the inbox on this transport, with each database: events committed before a crash are
/// published after the restart, a redelivery of an event whose handling committed does not run the handler again, and
/// 10,000 events through both with a consumer killed mid-run have their effect recorded exactly once.
/// </summary>
public abstract partial class ConformanceSuite<TFixture>
{
    [Fact(Timeout = 120_000)]
    public Task Outbox_events_committed_before_a_crash_are_published_after_the_restart_on_sqlite() => Case(() =>
        CommittedBeforeCrashAsync(OutboxDatabaseProvider.Sqlite));

    [Fact(Timeout = 120_000)]
    public Task Outbox_events_committed_before_a_crash_are_published_after_the_restart_on_postgresql() => Case(() =>
        CommittedBeforeCrashAsync(OutboxDatabaseProvider.PostgreSql));

    [Fact(Timeout = 120_000)]
    public Task Inbox_a_redelivery_after_a_crash_between_commit_and_ack_does_not_run_the_handler_again_on_sqlite() => Case(() =>
        RedeliveredAfterCommitAsync(OutboxDatabaseProvider.Sqlite));

    [Fact(Timeout = 120_000)]
    public Task Inbox_a_redelivery_after_a_crash_between_commit_and_ack_does_not_run_the_handler_again_on_postgresql() => Case(() =>
        RedeliveredAfterCommitAsync(OutboxDatabaseProvider.PostgreSql));

    [Fact(Timeout = 600_000)]
    public Task Outbox_and_inbox_10000_events_with_a_killed_consumer_have_each_effect_exactly_once_on_sqlite() => Case(() =>
        ExactlyOnceEffectsAsync(OutboxDatabaseProvider.Sqlite));

    [Fact(Timeout = 600_000)]
    public Task Outbox_and_inbox_10000_events_with_a_killed_consumer_have_each_effect_exactly_once_on_postgresql() => Case(() =>
        ExactlyOnceEffectsAsync(OutboxDatabaseProvider.PostgreSql));

    [Fact(Timeout = 120_000)]
    public Task Outbox_the_relayed_event_is_the_event_that_was_written() => Case(async () =>
    {
        await using var database = await OutboxDatabaseAsync(OutboxDatabaseProvider.Sqlite);
        var (topic, sub) = Names();
        var probe = new Probe();
        await using var host = await StartOutboxHostAsync(probe, m =>
        {
            foreach (var ext in EveryExtension)
            {
                m.AddExtensionAttribute(ext);
            }
            Subscribe(topic, sub)(m);
        }, database);
        var sent = EventWithEveryAttribute();
        var binary = NewEvent(data: Enumerable.Range(0, 256).Select(i => (byte)i).ToArray());
        var none = NewEvent();
        none.Data = null;
        none.DataContentType = null;

        await WriteThroughOutboxAsync(host, topic, [sent, binary, none]);
        await Wait.UntilAsync(() => probe.Handled.Count == 3, "the three events are relayed and handled");
        var got = probe.Handled.Single(h => h.Event.Id == sent.Id).Event;
        AssertSameEvent(sent, got);
        Assert.Equal((byte[])binary.Data!, Assert.IsType<byte[]>(probe.Handled.Single(h => h.Event.Id == binary.Id).Event.Data));
        var gotNone = probe.Handled.Single(h => h.Event.Id == none.Id).Event;
        Assert.Null(gotNone.Data);
        Assert.Null(gotNone.DataContentType);
    });

    /// <summary>The case's database; a PostgreSQL that is not there skips the case on a laptop and fails it where required.</summary>
    private static async Task<OutboxTestDatabase> OutboxDatabaseAsync(OutboxDatabaseProvider provider)
    {
        if (await OutboxTestDatabase.UnavailableReasonAsync(provider) is { } reason)
        {
            if (Required("postgresql"))
            {
                Assert.Fail($"PostgreSQL is required by MESSAGING_CONFORMANCE_REQUIRE but unavailable: {reason}");
            }
            Assert.Skip(reason);
        }
        return await OutboxTestDatabase.CreateAsync(provider);
    }

    private Task<ConformanceHost> StartOutboxHostAsync(Probe probe, Action<MessagingBuilder> configure, OutboxTestDatabase database, bool relay = true) =>
        ConformanceHost.StartAsync(Fixture, probe, m =>
        {
            configure(m);
            m.AddOutbox();
        }, Fixture.UseLongLeases, database.Settings(relay));

    private static async Task WriteThroughOutboxAsync(ConformanceHost host, string topic, IReadOnlyList<CloudEvent> events)
    {
        var outbox = host.Services.GetRequiredService<IOutbox>();
        await using var connection = await host.Services.GetRequiredService<IOutboxDatabase>().OpenConnectionAsync(Ct);
        await using var transaction = await connection.BeginTransactionAsync(Ct);
        await outbox.PublishBatchAsync(topic, events, transaction, Ct);
        await transaction.CommitAsync(Ct);
    }

    private async Task CommittedBeforeCrashAsync(OutboxDatabaseProvider provider)
    {
        await using var database = await OutboxDatabaseAsync(provider);
        var (topic, sub) = Names();
        var probe = new Probe();
        await using var consumer = await StartWithLongLeasesAsync(probe, Subscribe(topic, sub));

        // The process commits its unit of work and dies before its relay publishes anything (its relay never runs).
        var doomed = await StartOutboxHostAsync(probe, m => m.AddTopic(topic), database, relay: false);
        var events = Enumerable.Range(0, 5).Select(_ => NewEvent()).ToList();
        await WriteThroughOutboxAsync(doomed, topic, events);
        await doomed.CrashAsync();
        await doomed.DisposeAsync();
        Assert.Empty(probe.Handled);
        Assert.Equal(5, await database.CountAsync("SELECT COUNT(*) FROM messaging_outbox WHERE sent_at IS NULL"));

        // The restarted process's relay publishes the committed rows.
        await using var restarted = await StartOutboxHostAsync(probe, m => m.AddTopic(topic), database);
        await Wait.UntilAsync(() => probe.Handled.Count >= 5, "the five committed events are delivered after the restart");
        Assert.Equal(events.Select(e => e.Id).Order(), probe.Handled.Select(h => h.Event.Id).Order());
        await Wait.UntilAsync(() => database.CountAsync("SELECT COUNT(*) FROM messaging_outbox WHERE sent_at IS NULL"), n => n == 0,
            "the rows are marked sent");
    }

    private async Task RedeliveredAfterCommitAsync(OutboxDatabaseProvider provider)
    {
        await using var database = await OutboxDatabaseAsync(provider);
        var (topic, sub) = Names();
        var committed = new TaskCompletionSource();
        var probe = new Probe
        {
            Behaviour = async (c, ct) =>
            {
                if (c.Attempt == 1)
                {
                    committed.TrySetResult();
                    await Task.Delay(Timeout.Infinite, ct); // committed, not acknowledged: hangs until the crash tears it down
                }
            },
        };
        Action<MessagingBuilder> configure = m => m.AddSubscription(sub, topic, s =>
            s.HandleCloudEvents<InboxProbeHandler>().WithMaxAttempts(5).WithBackoff(Backoff.Fixed(TimeSpan.FromMilliseconds(100))));
        var doomed = await StartOutboxHostAsync(probe, configure, database);
        var sent = NewEvent();
        await doomed.Publisher.PublishAsync(topic, sent, Ct);
        await committed.Task.WaitAsync(TimeSpan.FromSeconds(30), Ct);
        Assert.Equal(1, await database.CountAsync("SELECT COUNT(*) FROM effects"));
        await doomed.CrashAsync();

        await using var survivor = await StartOutboxHostAsync(probe, configure, database);
        // As in the crash retry case: SNS/SQS may take WaitTimeSeconds + VisibilityTimeout to redeliver.
        await Wait.UntilAsync(() => probe.Handled.Count == 1, "the event is redelivered to the new consumer and completed", TimeSpan.FromSeconds(90));
        Assert.True(probe.Handled.Single().Attempt >= 2);
        Assert.Equal(1, await database.CountAsync("SELECT COUNT(*) FROM effects"));
        Assert.Equal(1, await database.CountAsync("SELECT COUNT(*) FROM messaging_inbox"));
        await doomed.DisposeAsync();
    }

    private async Task ExactlyOnceEffectsAsync(OutboxDatabaseProvider provider)
    {
        const int Total = 10_000;
        const int PerTransaction = 100;
        await using var database = await OutboxDatabaseAsync(provider);
        var (topic, sub) = Names();
        var probe = new Probe();
        Action<MessagingBuilder> configure = m => m.AddSubscription(sub, topic, s =>
            s.HandleCloudEvents<InboxProbeHandler>().WithMaxAttempts(10).WithBackoff(Backoff.Fixed(TimeSpan.FromMilliseconds(100))));
        // Consumers do not relay: the killed one would otherwise leave its relay running without a transport.
        var first = await StartOutboxHostAsync(probe, configure, database, relay: false);
        var second = await StartOutboxHostAsync(probe, configure, database, relay: false);
        await using var publisher = await StartOutboxHostAsync(probe, m => m.AddTopic(topic), database);
        var watch = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            var writing = Task.Run(async () =>
            {
                for (var i = 0; i < Total; i += PerTransaction)
                {
                    await WriteThroughOutboxAsync(publisher, topic, Enumerable.Range(0, PerTransaction).Select(_ => NewEvent()).ToList());
                }
            }, Ct);

            await Wait.UntilAsync(() => probe.Handled.Count >= Total * 3 / 10, "30% of the events are handled", TimeSpan.FromSeconds(300));
            var busiest = probe.Handled.GroupBy(h => h.Host).OrderByDescending(g => g.Count()).First().Key;
            var killed = first.Services.GetRequiredService<HostIdentity>().Name == busiest ? first : second;
            await killed.CrashAsync();
            var killedAt = watch.Elapsed;
            await writing.WaitAsync(TimeSpan.FromSeconds(300), Ct);

            await Wait.UntilAsync(() => database.CountAsync("SELECT COUNT(DISTINCT event_id) FROM effects"), n => n >= Total,
                $"all {Total} events have their effect", TimeSpan.FromSeconds(400));
            Assert.Equal(Total, await database.CountAsync("SELECT COUNT(*) FROM effects"));
            Assert.Equal(Total, await database.CountAsync("SELECT COUNT(*) FROM messaging_inbox"));
            // The relay marks a batch sent after the broker accepted all of it: consumers may finish before that.
            await Wait.UntilAsync(() => database.CountAsync("SELECT COUNT(*) FROM messaging_outbox WHERE sent_at IS NULL"), n => n == 0,
                "every outbox row is marked sent");
            var handledTwice = probe.Handled.GroupBy(h => h.Event.Id).Count(g => g.Count() > 1);
            TestContext.Current.TestOutputHelper?.WriteLine(
                $"{Fixture.TransportName}/{provider}: {Total} events in {watch.Elapsed.TotalSeconds:0.0}s, consumer killed at {killedAt.TotalSeconds:0.0}s; " +
                $"{handledTwice} redelivered after their handling committed, completed by the inbox without running the handler");
        }
        finally
        {
            await first.DisposeAsync();
            await second.DisposeAsync();
        }
    }
}
