using Messaging.Tests.Infrastructure;

namespace Messaging.Tests.Pipeline;

/// <summary>Abort gives back everything unsettled, once, and ignores what handlers settle after it.</summary>
public sealed class AbortTests
{
    [Fact]
    public async Task Abort_returns_running_and_waiting_messages_once_and_ignores_settlements_made_after_it()
    {
        var gates = new HandlerGates();
        var cancelledHandlers = 0;
        var finishedHandlers = 0;
        await using var harness = await PipelineHarness.StartAsync(PipelineHarness.Subscription(concurrency: 2, prefetch: 10), async (delivery, ct) =>
        {
            await gates.EnterAsync(delivery.MessageId!); // ignores its token: it settles late
            if (ct.IsCancellationRequested)
            {
                Interlocked.Increment(ref cancelledHandlers);
            }
            await delivery.CompleteAsync(CancellationToken.None);
            Interlocked.Increment(ref finishedHandlers);
        });
        var messages = new[] { "m1", "m2", "m3", "m4", "m5" }.Select(id => harness.Submit(id)).ToList();
        await gates.WaitUntilStartedAsync("m1");
        await gates.WaitUntilStartedAsync("m2");

        await Wait.ForAsync(harness.Pipeline.AbortAsync(), "the abort");

        Assert.All(messages, m => Assert.Equal(1, m.ReturnCalls));
        Assert.True(harness.Pipeline.IsStopping);

        gates.Open("m1");
        gates.Open("m2");
        await Wait.UntilAsync(() => Volatile.Read(ref finishedHandlers) == 2, "both late handlers finished");

        Assert.Equal(2, cancelledHandlers);
        Assert.All(messages, m => Assert.Equal(0, m.CompleteCalls));
        Assert.All(messages, m => Assert.Equal(1, m.SettlementCalls));
        Assert.Equal(["m1", "m2"], gates.Started.Order());
        await Wait.UntilAsync(() => harness.Pipeline.HeldCount == 0, "the late handlers let go of their messages");
    }

    public enum GiveUp
    {
        /// <summary>Waits on its token and returns when it fires.</summary>
        WhenItsWaitIsCancelled,

        /// <summary>Polls its token between steps and returns as soon as it is set.</summary>
        WhenPollingSeesTheToken,
    }

    [Theory]
    [InlineData(GiveUp.WhenItsWaitIsCancelled)]
    [InlineData(GiveUp.WhenPollingSeesTheToken)]
    public async Task A_handler_that_gives_up_unsettled_when_abort_cancels_it_still_gets_its_message_returned(GiveUp giveUp)
    {
        // Repeated: whether the handler gives up before or after the abort looked at the running messages is a race.
        for (var run = 0; run < 100; run++)
        {
            var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            await using var harness = await PipelineHarness.StartAsync(PipelineHarness.Subscription(concurrency: 1), async (delivery, ct) =>
            {
                started.TrySetResult();
                if (giveUp == GiveUp.WhenPollingSeesTheToken)
                {
                    while (!ct.IsCancellationRequested)
                    {
                        await Task.Yield();
                    }
                    return; // gives up without settling and without throwing
                }
                try
                {
                    await Task.Delay(Timeout.InfiniteTimeSpan, ct);
                }
                catch (OperationCanceledException)
                {
                    return; // gives up without settling and without throwing
                }
                await delivery.CompleteAsync(ct);
            });
            var message = harness.Submit("m1");
            await Wait.ForAsync(started.Task, "the handler to start");

            await Wait.ForAsync(harness.Pipeline.AbortAsync(), "the abort");

            await Wait.UntilAsync(() => message.ReturnCalls == 1, $"the message was returned (run {run})");
            await Wait.UntilAsync(() => harness.Pipeline.HeldCount == 0, $"the handler let go of its message (run {run})");
            Assert.Equal(1, message.SettlementCalls);
        }
    }

    [Fact]
    public async Task A_message_submitted_after_abort_is_returned_at_once_and_never_handled()
    {
        var handled = 0;
        await using var harness = await PipelineHarness.StartAsync(PipelineHarness.Subscription(concurrency: 4), (delivery, ct) =>
        {
            Interlocked.Increment(ref handled);
            return delivery.CompleteAsync(ct);
        });
        await Wait.ForAsync(harness.Pipeline.AbortAsync(), "the abort");

        var late = harness.Submit("late");

        await Wait.UntilAsync(() => late.ReturnCalls == 1, "the late message was returned");
        Assert.Equal(1, late.SettlementCalls);
        Assert.Equal(0, handled);
        await Wait.ForAsync(harness.Pipeline.AbortAsync(), "a second abort"); // idempotent
        await Wait.ForAsync(harness.Pipeline.StopAsync(Wait.TestToken), "a stop after the abort");
        Assert.Equal(1, late.SettlementCalls);
    }
}
