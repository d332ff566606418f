using System.Diagnostics;
using CloudNative.CloudEvents;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.Publishing;
using Microsoft.Extensions.Logging;

namespace Messaging.ConformanceTests.Cases;

/// <summary>
/// Faults a production broker brings, caused through the fixture: a broker that blocks or refuses publishes, and a broker
/// that closes what consumers receive on. Nothing may hang, nothing may be lost.
/// </summary>
public abstract partial class ConformanceSuite<TFixture>
{
    private static readonly TimeSpan ShortPublishTimeout = TimeSpan.FromSeconds(3);

    /// <summary>Fault cases need a broker the suite controls: a laptop may skip them, a required transport fails.</summary>
    private void RequireFaultInjection()
    {
        if (!Fixture.CanInjectFaults)
        {
            Assert.SkipWhen(!Required(Fixture.TransportName), $"{Fixture.TransportName}: the suite cannot cause faults on this broker.");
            Assert.Fail($"{Fixture.TransportName} is required, but the suite cannot cause faults on its broker to prove how it behaves.");
        }
    }

    /// <summary>Publishes, trying again while the publish fails as transient (a broker recovering), up to a deadline.</summary>
    private static async Task PublishUntilAcceptedAsync(ConformanceHost host, string topic, CloudEvent cloudEvent, TimeSpan patience)
    {
        var deadline = DateTime.UtcNow + patience;
        while (true)
        {
            try
            {
                await host.Publisher.PublishAsync(topic, cloudEvent, Ct);
                return;
            }
            catch (EventPublishException ex) when (ex.IsTransient && DateTime.UtcNow < deadline)
            {
                await Task.Delay(200, Ct); // a pause between attempts, not a synchronisation
            }
        }
    }

    [Fact(Timeout = 180_000)]
    public Task Fault_a_broker_that_blocks_publishes_fails_them_after_PublishTimeout_and_publishing_resumes() => Case(async () =>
    {
        var (topic, sub) = Names();
        var probe = new Probe();
        var settings = new Dictionary<string, string?> { ["Messaging:PublishTimeout"] = ShortPublishTimeout.ToString() };
        await using var host = await StartAsync(probe, Subscribe(topic, sub), settings);
        RequireFaultInjection();
        var before = NewEvent();
        await host.Publisher.PublishAsync(topic, before, Ct);
        await Wait.UntilAsync(() => probe.Handled.Any(h => h.Event.Id == before.Id), "the event published before the block is handled");

        var during = NewEvent();
        await using (await Fixture.BlockPublishesAsync(Ct))
        {
            // A blocked (or throttling) broker makes the publish fail with the library's exception, marked transient, once
            // PublishTimeout has passed at the latest: never a hang. The bound below only catches a hang.
            var failure = await Assert.ThrowsAsync<EventPublishException>(
                () => host.Publisher.PublishAsync(topic, during, Ct).WaitAsync(ShortPublishTimeout + TimeSpan.FromSeconds(30), Ct));
            Assert.True(failure.IsTransient, $"a blocked broker's failure should be transient: {failure}");
            Assert.Equal(topic, failure.Topic);

            // The caller's token is honoured while the broker blocks: the publish ends at once, cancelled (or refused).
            using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
            var cancelled = await Record.ExceptionAsync(
                () => host.Publisher.PublishAsync(topic, NewEvent(), cancel.Token).WaitAsync(ShortPublishTimeout + TimeSpan.FromSeconds(30), Ct));
            Assert.True(cancelled is OperationCanceledException or EventPublishException { IsTransient: true },
                $"a cancelled publish on a blocked broker should end cancelled (or refused), not with {cancelled?.ToString() ?? "success"}");
        }

        // Lifted: publishing works again, and what is published is handled.
        var after = NewEvent();
        await PublishUntilAcceptedAsync(host, topic, after, TimeSpan.FromSeconds(60));
        await Wait.UntilAsync(() => probe.Handled.Any(h => h.Event.Id == after.Id), "the event published after the block is handled", TimeSpan.FromSeconds(60));
    });

    [Fact(Timeout = 330_000)]
    public Task Fault_a_consumer_connection_closed_by_the_broker_is_reported_and_consumption_resumes_losing_nothing() => Case(async () =>
    {
        var (topic, sub) = Names();
        var probe = new Probe();
        var logs = new LogCapture();
        await using var host = await ConformanceHost.StartAsync(Fixture, probe, Subscribe(topic, sub, s => s.WithConcurrency(4)), logs.AddTo);
        if (!host.Transport.Capabilities.ConnectsToBroker)
        {
            // The transport itself says it has no connection a broker could close (the in-memory broker lives in the process).
            DeclaredUnsupported();
            return;
        }
        RequireFaultInjection();
        var published = new List<string>();
        async Task PublishSomeAsync(int count)
        {
            for (var i = 0; i < count; i++)
            {
                var e = NewEvent();
                await PublishUntilAcceptedAsync(host, topic, e, TimeSpan.FromSeconds(60));
                published.Add(e.Id!);
            }
        }
        bool AllHandled() => published.All(id => probe.Handled.Any(h => h.Event.Id == id));
        int Warnings() => logs.Entries.Count(e => e.Level >= LogLevel.Warning);

        await PublishSomeAsync(20);
        await Wait.UntilAsync(AllHandled, "consumption is under way");
        var warningsBefore = Warnings();

        await using (await Fixture.BreakConsumersAsync(topic, sub, Ct))
        {
            await PublishSomeAsync(20);
            await Wait.UntilAsync(() => Warnings() > warningsBefore, "a Warning names the fault", TimeSpan.FromSeconds(60));
        }
        await PublishSomeAsync(20);

        // Nothing lost: every event is handled, or dead-lettered by the broker's own delivery limit. The latter is what the
        // Pub/Sub emulator does to some messages that were in flight on a reset stream (see README's known limitations).
        await Wait.UntilAsync(async () =>
        {
            if (AllHandled())
            {
                return true;
            }
            IReadOnlyList<Messaging.DeadLetters.DeadLetteredEvent> dead;
            try
            {
                dead = await host.DeadLetters.PeekAsync(sub, 100, Ct);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                return false; // the connection the store reads on may still be recovering from the fault: look again
            }
            return published.All(id => probe.Handled.Any(h => h.Event.Id == id) || dead.Any(d => d.Event?.Id == id));
        }, ok => ok, "every event, before, during and after the fault, is handled (or dead-lettered by the broker)", TimeSpan.FromSeconds(200));
    });

    [Fact(Timeout = 180_000)]
    public Task Fault_a_lease_lost_while_its_handler_runs_cancels_the_handler_and_the_message_comes_again() => Case(async () =>
    {
        var (topic, sub) = Names();
        var firstStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var firstCancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var probe = new Probe
        {
            Behaviour = async (context, ct) =>
            {
                if (context.Attempt > 1)
                {
                    return;
                }
                firstStarted.TrySetResult();
                try
                {
                    await Task.Delay(Timeout.Infinite, ct);
                }
                catch (OperationCanceledException)
                {
                    firstCancelled.TrySetResult();
                    // Returns normally: the handler path then settles a message whose lease is gone, which must raise no error.
                }
            },
        };
        var logs = new LogCapture();
        await using var host = await ConformanceHost.StartAsync(Fixture, probe, Subscribe(topic, sub, s => s.WithMaxAttempts(5)), logs.AddTo);
        if (!host.Transport.Capabilities.ReportsLostLeases)
        {
            // The transport itself says it is not told which lease was lost (Pub/Sub), or has none (in-memory).
            DeclaredUnsupported();
            return;
        }
        RequireFaultInjection();
        var e = NewEvent();
        await host.Publisher.PublishAsync(topic, e, Ct);
        await firstStarted.Task.WaitAsync(TimeSpan.FromSeconds(60), Ct); // the first attempt's handler runs

        await Fixture.ExpireLeasesAsync(topic, sub, Ct);

        await firstCancelled.Task.WaitAsync(TimeSpan.FromSeconds(60), Ct); // the handler whose lease was lost sees its token fire
        var again = await Wait.UntilAsync(() => Task.FromResult(probe.Handled.FirstOrDefault(h => h.Event.Id == e.Id && h.Attempt > 1)), h => h is not null,
            "the message is delivered again, as a later attempt, and handled", TimeSpan.FromSeconds(60));
        Assert.True(again!.Attempt >= 2, $"the redelivery after a lost lease should be attempt 2 or later, was {again.Attempt}");
        var errors = logs.Entries.Where(l => l.Level >= LogLevel.Error).ToList();
        Assert.True(errors.Count == 0, "the late settlement of a lost lease raised errors: " + string.Join(" | ", errors.Select(l => l.Message)));
    });

    [Fact(Timeout = 240_000)]
    public Task Fault_retry_and_dead_letter_copies_a_blocked_broker_refuses_leave_the_original_to_come_back() => Case(async () =>
    {
        var (topic, sub) = Names();
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        const string RetryType = "com.example.conformance.retry-me";
        const string RejectType = "com.example.conformance.reject-me";
        var probe = new Probe
        {
            Behaviour = async (context, ct) =>
            {
                if (context.Attempt == 1)
                {
                    // The failure is decided once the broker blocks: the retry (or dead-letter) copy is sent into the block.
                    await gate.Task.WaitAsync(ct);
                    if (context.Event.Type == RetryType)
                    {
                        throw new InvalidOperationException("failing the first attempt, while the broker blocks");
                    }
                }
                if (context.Event.Type == RejectType)
                {
                    throw new Messaging.Handling.UnprocessableEventException("rejected, while the broker blocks");
                }
            },
        };
        // Copies sent by the consumer (a retry copy, a dead-letter copy) give up quickly too, where the transport sends them.
        var settings = new Dictionary<string, string?>
        {
            ["Messaging:PublishTimeout"] = ShortPublishTimeout.ToString(),
            ["Messaging:RabbitMQ:PublishTimeout"] = ShortPublishTimeout.ToString(),
        };
        await using var host = await StartWithLongLeasesAsync(probe, Subscribe(topic, sub, s => s.WithMaxAttempts(3)), settings);
        RequireFaultInjection();
        var retried = NewEvent(RetryType);
        var rejected = NewEvent(RejectType);
        await host.Publisher.PublishBatchAsync(topic, [retried, rejected], Ct);
        await Wait.UntilAsync(() => probe.AttemptsOf(retried.Id!).Any() && probe.AttemptsOf(rejected.Id!).Any(), "both first attempts are running", TimeSpan.FromSeconds(60));

        await using (await Fixture.BlockPublishesAsync(Ct))
        {
            gate.SetResult();
            // The block lasts until the failed event came back (where its retry copy met the block and timed out, the
            // original was given back), or for an observation window where the block holds everything (the Pub/Sub relay).
            var window = Stopwatch.StartNew();
            while (!probe.AttemptsOf(retried.Id!).Any(a => a.Attempt >= 2) && window.Elapsed < TimeSpan.FromSeconds(15))
            {
                await Task.Delay(50, Ct);
            }
        }

        // Lifted: nothing was lost. The failed event comes again and is handled; the rejected one ends as a dead letter.
        await Wait.UntilAsync(() => probe.Handled.Any(h => h.Event.Id == retried.Id && h.Attempt >= 2),
            "the event whose retry copy met the block is handled at a later attempt", TimeSpan.FromSeconds(120));
        var dead = await Wait.UntilAsync(() => host.DeadLetters.PeekAsync(sub, 10, Ct), d => d.Any(x => x.Event?.Id == rejected.Id),
            "the event whose dead-letter copy met the block is dead-lettered", TimeSpan.FromSeconds(120));
        // A copy that timed out may still have been stored once the block lifted (at-least-once): then the event is
        // dead-lettered twice, each copy for the same reason.
        Assert.All(dead.Where(x => x.Event?.Id == rejected.Id), x => Assert.Equal(Messaging.DeadLetters.DeadLetterReason.Rejected, x.Metadata.Reason));
        Assert.DoesNotContain(probe.Handled, h => h.Event.Id == rejected.Id);
    });

    [Fact(Timeout = 240_000)]
    public Task Fault_a_host_stopping_while_the_broker_blocks_publishes_stops_within_its_shutdown_timeout() => Case(async () =>
    {
        var (topic, sub) = Names();
        var publishing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var probe = new Probe();
        // A long PublishTimeout: the stop must not wait it out.
        var settings = new Dictionary<string, string?>
        {
            ["Messaging:PublishTimeout"] = "00:02:00",
            ["Messaging:RabbitMQ:PublishTimeout"] = "00:02:00",
        };
        var host = await StartAsync(probe, Subscribe(topic, sub), settings);
        try
        {
            RequireFaultInjection();
            var publisher = host.Publisher;
            probe.Behaviour = async (context, ct) =>
            {
                await gate.Task.WaitAsync(ct);
                publishing.TrySetResult();
                await publisher.PublishAsync(topic, NewEvent(), ct); // a handler that publishes, as services do
            };
            await host.Publisher.PublishAsync(topic, NewEvent(), Ct);
            await Wait.UntilAsync(() => probe.Attempts.Count == 1, "the handler runs");
            await using (await Fixture.BlockPublishesAsync(Ct))
            {
                gate.SetResult();
                await publishing.Task.WaitAsync(TimeSpan.FromSeconds(30), Ct);
                // The stop's deadline (5 s) cancels the handler, whose publish honours its token. The bound is far below the
                // publish's own 2-minute timeout: a stop that waited for the blocked publish fails it.
                await host.StopAsync(TimeSpan.FromSeconds(5)).WaitAsync(TimeSpan.FromSeconds(60), Ct);
            }
        }
        finally
        {
            await host.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(60), Ct);
        }
    });
}
