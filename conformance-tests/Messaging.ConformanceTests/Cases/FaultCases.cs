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

    [Fact(Timeout = 240_000)]
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

        await Wait.UntilAsync(AllHandled, "every event, before, during and after the fault, is handled", TimeSpan.FromSeconds(120));
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
}
