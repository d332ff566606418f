using Messaging.Tests.Infrastructure;
using Messaging.Transport;

namespace Messaging.Tests.Pipeline;

/// <summary>A graceful stop drains what runs; what never started goes back or is handled, as the receiver says.</summary>
public sealed class StopTests
{
    [Fact]
    public async Task Stop_returns_the_waiting_messages_and_completes_only_once_the_running_handler_finishes()
    {
        var gates = new HandlerGates();
        await using var harness = await PipelineHarness.StartAsync(
            PipelineHarness.Subscription(concurrency: 1, prefetch: 10),
            async (delivery, ct) =>
            {
                await gates.EnterAsync(delivery.MessageId!);
                await delivery.CompleteAsync(ct);
            },
            StopBehavior.ReturnUnstarted);
        var running = harness.Submit("m1");
        var waiting = new[] { "m2", "m3", "m4", "m5" }.Select(id => harness.Submit(id)).ToList();
        await gates.WaitUntilStartedAsync("m1");

        var stop = harness.Pipeline.StopAsync(Wait.TestToken);

        await Wait.UntilAsync(() => waiting.All(m => m.ReturnCalls == 1), "the four waiting messages were returned");
        Assert.False(stop.IsCompleted, "the stop completed while a handler was still running");
        Assert.DoesNotContain("drained", harness.Log.Entries);

        gates.Open("m1");
        await Wait.ForAsync(stop, "the stop to complete once the running handler finished");

        Assert.Equal(1, running.CompleteCalls);
        Assert.Equal(1, running.SettlementCalls);
        Assert.All(waiting, m => Assert.Equal(1, m.SettlementCalls));
        Assert.Equal(["m1"], gates.Started);
        var log = harness.Log;
        Assert.True(log.PositionOf("stop-receiving") < log.PositionOf("return:m2"), log.ToString());
        Assert.True(log.PositionOf("return:m5") < log.PositionOf("drained"), log.ToString());
        Assert.True(log.PositionOf("complete:m1") < log.PositionOf("drained"), log.ToString());
        Assert.Equal(0, harness.Pipeline.HeldCount);
    }

    [Fact]
    public async Task Stop_with_a_receiver_that_handles_what_it_received_handles_all_of_it_and_returns_nothing()
    {
        var gates = new HandlerGates();
        await using var harness = await PipelineHarness.StartAsync(
            PipelineHarness.Subscription(concurrency: 1, prefetch: 10),
            async (delivery, ct) =>
            {
                await gates.EnterAsync(delivery.MessageId!);
                await delivery.CompleteAsync(ct);
            },
            StopBehavior.HandleReceived);
        var ids = new[] { "m1", "m2", "m3", "m4", "m5" };
        var messages = ids.Select(id => harness.Submit(id)).ToList();
        foreach (var id in ids.Skip(1))
        {
            gates.Open(id);
        }
        await gates.WaitUntilStartedAsync("m1");

        var stop = harness.Pipeline.StopAsync(Wait.TestToken);

        await Wait.UntilAsync(() => harness.Log.Contains("stop-receiving"), "the receiver was told to stop");
        Assert.False(stop.IsCompleted, "the stop completed while a handler was still running");
        gates.Open("m1");
        await Wait.ForAsync(stop, "the stop to complete once every received message was handled");

        Assert.All(messages, m => Assert.Equal(1, m.CompleteCalls));
        Assert.All(messages, m => Assert.Equal(1, m.SettlementCalls));
        Assert.Equal(ids, gates.Started);
        Assert.True(harness.Log.PositionOf("complete:m5") < harness.Log.PositionOf("drained"), harness.Log.ToString());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_stop_whose_deadline_passes_cancels_the_handler_and_returns_its_message(bool handlerThrowsWhenCancelled)
    {
        var handlerCancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var harness = await PipelineHarness.StartAsync(
            PipelineHarness.Subscription(concurrency: 1, prefetch: 10),
            async (delivery, ct) =>
            {
                try
                {
                    await Task.Delay(Timeout.InfiniteTimeSpan, ct);
                }
                catch (OperationCanceledException)
                {
                    handlerCancelled.TrySetResult();
                    if (handlerThrowsWhenCancelled)
                    {
                        throw;
                    }
                    return; // honours its token by giving up, without settling
                }
                await delivery.CompleteAsync(ct);
            });
        var running = harness.Submit("m1");
        var waiting = harness.Submit("m2");
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(Wait.TestToken);

        var stop = harness.Pipeline.StopAsync(deadline.Token);
        await Wait.UntilAsync(() => waiting.ReturnCalls == 1, "the waiting message was returned");
        Assert.False(stop.IsCompleted, "the stop completed while a handler was still running");
        await deadline.CancelAsync();

        await Wait.ForAsync(stop, "the stop to give up at its deadline");
        await Wait.ForAsync(handlerCancelled.Task, "the handler's token to fire");
        await Wait.UntilAsync(() => running.ReturnCalls == 1, "the running message was returned");
        Assert.Equal(1, running.SettlementCalls);
        Assert.Equal(1, waiting.SettlementCalls);
        Assert.DoesNotContain("drained", harness.Log.Entries);
    }
}
