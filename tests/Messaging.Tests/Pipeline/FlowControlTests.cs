using Messaging.Tests.Infrastructure;

namespace Messaging.Tests.Pipeline;

/// <summary>At most <c>Concurrency + Prefetch</c> messages are held; transports wait for a place to free up.</summary>
public sealed class FlowControlTests
{
    [Fact]
    public async Task Reservations_never_exceed_concurrency_plus_prefetch_and_wait_until_a_message_settles()
    {
        var gates = new HandlerGates();
        await using var harness = await PipelineHarness.StartAsync(PipelineHarness.Subscription(concurrency: 2, prefetch: 1), async (delivery, ct) =>
        {
            await gates.EnterAsync(delivery.MessageId!, ct);
            await delivery.CompleteAsync(ct);
        });
        var pipeline = harness.Pipeline;
        Assert.Equal(3, pipeline.Capacity);

        var reserved = await Wait.ForAsync(pipeline.ReserveAsync(10, Wait.TestToken).AsTask(), "the first reservation");
        Assert.Equal(3, reserved);
        var pending = pipeline.ReserveAsync(1, Wait.TestToken).AsTask();
        Assert.False(pending.IsCompleted, "a place was reserved beyond the capacity");

        var messages = new[] { "m1", "m2", "m3" }.Select(id => harness.NewMessage(id)).ToList();
        messages.ForEach(m => pipeline.Submit(m, reserved: true));
        await gates.WaitUntilStartedAsync("m1");
        await gates.WaitUntilStartedAsync("m2");
        Assert.Equal(3, pipeline.HeldCount);
        Assert.False(pending.IsCompleted, "a place was reserved while every place holds a message");

        gates.Open("m1");

        Assert.Equal(1, await Wait.ForAsync(pending, "the reservation to get the place m1 freed"));
        Assert.Equal(1, messages[0].CompleteCalls);
        var another = pipeline.ReserveAsync(1, Wait.TestToken).AsTask();
        Assert.False(another.IsCompleted, "a place was reserved beyond the capacity");

        gates.Open("m2");
        Assert.Equal(1, await Wait.ForAsync(another, "the reservation to get the place m2 freed"));
        pipeline.CancelReservation(2);
        gates.Open("m3");
        await harness.StopAsync();
        Assert.All(messages, m => Assert.Equal(1, m.SettlementCalls));
    }

    [Fact]
    public async Task Cancelled_reservations_give_their_places_back()
    {
        await using var harness = await PipelineHarness.StartAsync(PipelineHarness.Subscription(concurrency: 3, prefetch: 2), (delivery, ct) => delivery.CompleteAsync(ct));
        var pipeline = harness.Pipeline;

        Assert.Equal(2, await pipeline.ReserveAsync(2, Wait.TestToken)); // never more than asked for
        Assert.Equal(3, await pipeline.ReserveAsync(10, Wait.TestToken)); // never more than the capacity
        pipeline.CancelReservation(2);
        Assert.Equal(2, await Wait.ForAsync(pipeline.ReserveAsync(10, Wait.TestToken).AsTask(), "the places given back"));
        Assert.False(pipeline.ReserveAsync(1, Wait.TestToken).IsCompleted, "a place was reserved beyond the capacity");
        pipeline.CancelReservation(0);
    }

    [Fact]
    public async Task After_an_abort_nothing_is_reserved_so_a_receive_loop_still_running_takes_no_message_to_give_back()
    {
        var gates = new HandlerGates();
        await using var harness = await PipelineHarness.StartAsync(PipelineHarness.Subscription(concurrency: 1, prefetch: 0), async (delivery, ct) =>
        {
            await gates.EnterAsync(delivery.MessageId!, ct);
            await delivery.CompleteAsync(ct);
        });
        var pipeline = harness.Pipeline;
        Assert.Equal(1, await pipeline.ReserveAsync(1, Wait.TestToken));
        var held = harness.NewMessage("held");
        pipeline.Submit(held, reserved: true);
        await gates.WaitUntilStartedAsync("held");
        var waiting = pipeline.ReserveAsync(1, Wait.TestToken).AsTask(); // a loop waiting for a place when the abort comes

        await Wait.ForAsync(pipeline.AbortAsync(), "the abort");

        // The abort gave the held message back and freed its place; the waiting loop must not get it.
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Wait.ForAsync(waiting, "the waiting reservation to end"));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pipeline.ReserveAsync(1, Wait.TestToken).AsTask());
        Assert.Equal(1, held.ReturnCalls);
    }

    [Fact]
    public async Task Disposed_without_a_stop_it_stops_receiving_before_it_gives_messages_back()
    {
        var gates = new HandlerGates();
        var harness = await PipelineHarness.StartAsync(PipelineHarness.Subscription(concurrency: 1, prefetch: 0), async (delivery, ct) =>
        {
            await gates.EnterAsync(delivery.MessageId!, ct);
            await delivery.CompleteAsync(ct);
        });
        var held = harness.Submit("held");
        await gates.WaitUntilStartedAsync("held");

        await Wait.ForAsync(harness.DisposeAsync().AsTask(), "the disposal");

        // Given back while the receiver still received, the message would come straight back, one more delivery each time.
        Assert.Equal(1, held.ReturnCalls);
        Assert.True(harness.Log.PositionOf("stop-receiving") < harness.Log.PositionOf("return:held"), $"calls: {harness.Log}");
    }
}
