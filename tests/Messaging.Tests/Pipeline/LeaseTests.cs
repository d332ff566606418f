using Messaging.Tests.Infrastructure;

namespace Messaging.Tests.Pipeline;

/// <summary>Every held message, waiting or running, has its lease extended until it is settled; a lost lease cancels its handler.</summary>
public sealed class LeaseTests
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Leases_are_renewed_while_a_message_waits_or_runs_and_never_after_it_is_settled()
    {
        var clock = new RenewalClock(Interval);
        var gates = new HandlerGates();
        await using var harness = await PipelineHarness.StartAsync(
            PipelineHarness.Subscription(concurrency: 1, prefetch: 5),
            async (delivery, ct) =>
            {
                await gates.EnterAsync(delivery.MessageId!, ct);
                await delivery.CompleteAsync(ct);
            },
            leaseRenewalInterval: clock.Interval,
            time: clock);
        var first = harness.Submit("m1");
        var second = harness.Submit("m2"); // waits for the only slot
        await gates.WaitUntilStartedAsync("m1");

        await clock.TickAsync(3);

        Assert.Equal(3, first.Renewals);
        Assert.Equal(3, second.Renewals);
        Assert.False(gates.HasStarted("m2"));

        gates.Open("m1");
        await gates.WaitUntilStartedAsync("m2");
        Assert.Equal(1, first.CompleteCalls);

        await clock.TickAsync(2);

        Assert.Equal(3, first.Renewals);
        Assert.Equal(5, second.Renewals);

        gates.Open("m2");
        await Wait.UntilAsync(() => second.CompleteCalls == 1, "the second message was completed");
        await clock.TickAsync(2);

        Assert.Equal(5, second.Renewals);
        Assert.Equal(5, harness.Receiver.RenewRounds);
        await harness.StopAsync();
        Assert.Equal(1, first.SettlementCalls);
        Assert.Equal(1, second.SettlementCalls);
    }

    [Fact]
    public async Task A_lost_lease_cancels_the_handler_and_its_later_settlement_is_dropped_silently()
    {
        var clock = new RenewalClock(Interval);
        var handlerCancelled = false;
        var lostHandlerFinished = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var harness = await PipelineHarness.StartAsync(
            PipelineHarness.Subscription(concurrency: 1, prefetch: 5),
            async (delivery, ct) =>
            {
                if (delivery.MessageId != "m1")
                {
                    await delivery.CompleteAsync(ct);
                    return;
                }
                started.TrySetResult();
                try
                {
                    await Task.Delay(Timeout.InfiniteTimeSpan, ct);
                }
                catch (OperationCanceledException)
                {
                    handlerCancelled = true;
                }
                await delivery.CompleteAsync(CancellationToken.None); // too late: the broker already took the message back
                lostHandlerFinished.TrySetResult();
            },
            leaseRenewalInterval: clock.Interval,
            time: clock);
        harness.Receiver.OnRenew = messages =>
        {
            foreach (var message in messages.OfType<FakeMessage>().Where(m => m.Id == "m1"))
            {
                message.ReportLeaseLost("x");
            }
        };
        var lost = harness.Submit("m1");
        var next = harness.Submit("m2");
        await Wait.ForAsync(started.Task, "the handler to start");

        await clock.TickAsync();

        await Wait.ForAsync(lostHandlerFinished.Task, "the handler of the lost message to finish without an exception");
        Assert.True(handlerCancelled);
        await Wait.ForAsync(next.FirstSettlementCall, "the next message to be handled");
        await harness.StopAsync();
        Assert.Equal(0, lost.SettlementCalls);
        Assert.False(lost.IsHeld);
        Assert.Equal(1, next.CompleteCalls);
        Assert.Equal(1, next.SettlementCalls);
    }

    [Fact]
    public async Task A_message_whose_lease_is_lost_while_it_waits_is_neither_handled_nor_returned()
    {
        var clock = new RenewalClock(Interval);
        var gates = new HandlerGates();
        await using var harness = await PipelineHarness.StartAsync(
            PipelineHarness.Subscription(concurrency: 1, prefetch: 5),
            async (delivery, ct) =>
            {
                await gates.EnterAsync(delivery.MessageId!, ct);
                await delivery.CompleteAsync(ct);
            },
            leaseRenewalInterval: clock.Interval,
            time: clock);
        harness.Receiver.OnRenew = messages =>
        {
            foreach (var message in messages.OfType<FakeMessage>().Where(m => m.Id == "m2"))
            {
                message.ReportLeaseLost("x");
            }
        };
        var running = harness.Submit("m1");
        var lost = harness.Submit("m2");
        var after = harness.Submit("m3");
        gates.Open("m3");
        await gates.WaitUntilStartedAsync("m1");

        await clock.TickAsync();
        gates.Open("m1");

        await Wait.ForAsync(after.FirstSettlementCall, "the message after the lost one to be handled");
        await harness.StopAsync();
        Assert.Equal(["m1", "m3"], gates.Started);
        Assert.Equal(0, lost.SettlementCalls);
        Assert.Equal(1, running.CompleteCalls);
        Assert.Equal(1, after.CompleteCalls);
    }
}
