using System.Collections.Concurrent;
using CloudNative.CloudEvents;
using Messaging.InMemory;
using Messaging.Tests.Infrastructure;
using Messaging.Topology;
using Messaging.Transport;

namespace Messaging.Tests.InMemory;

/// <summary>
/// The in-memory broker's queue bounds what publishers add, never what comes back: a retry or a returned message must
/// neither wait for room (that stalled every worker on a full queue) nor be dropped (that lost it).
/// </summary>
public sealed class InMemoryQueueTests
{
    private static readonly SubscriptionDefinition Subscription = new() { Name = "sub", Topic = "topic", Concurrency = 1, Prefetch = 0 };

    private static async Task<InMemoryTransport> TransportAsync(InMemoryBroker broker)
    {
        var transport = new InMemoryTransport(broker, []);
        await transport.ProvisionAsync(new MessagingTopology(["topic"], [Subscription]), Wait.TestToken);
        return transport;
    }

    private static CloudEvent Event(string id) => new()
    {
        Id = id,
        Source = new Uri("urn:test"),
        Type = "com.example.test",
        DataContentType = "text/plain",
        Data = "x"u8.ToArray(),
    };

    [Fact]
    public async Task A_zero_delay_retry_goes_back_into_a_full_queue_without_waiting_for_room()
    {
        var broker = new InMemoryBroker(new InMemoryTransportOptions { QueueCapacity = 1 });
        await using var transport = await TransportAsync(broker);
        var attempts = new ConcurrentDictionary<string, int>();
        var completed = new ConcurrentBag<string>();
        var handlingA = new TaskCompletionSource();
        var release = new TaskCompletionSource();
        await using var pipeline = new ReceivePipeline(Subscription, async (delivery, ct) =>
        {
            var id = delivery.Event!.Id!;
            if (attempts.AddOrUpdate(id, 1, (_, n) => n + 1) == 1)
            {
                if (id == "a")
                {
                    handlingA.TrySetResult();
                    await release.Task; // B fills the queue meanwhile
                }
                await delivery.RetryAsync(TimeSpan.Zero, ct);
                return;
            }
            completed.Add(id);
            await delivery.CompleteAsync(ct);
        }, null, null, "InMemory");
        await pipeline.StartAsync(transport, Wait.TestToken);

        await transport.PublishAsync("topic", [Event("a")], Wait.TestToken);
        await Wait.ForAsync(handlingA.Task, "A's first attempt");
        await transport.PublishAsync("topic", [Event("b")], Wait.TestToken); // the queue's one place is taken now
        release.SetResult();

        await Wait.UntilAsync(() => completed.Count == 2, "A (retried into the full queue) and B both complete");
        Assert.Equal(2, attempts["a"]);
    }

    [Fact]
    public async Task A_message_given_back_to_a_full_queue_is_kept()
    {
        var broker = new InMemoryBroker(new InMemoryTransportOptions { QueueCapacity = 1 });
        await using var transport = await TransportAsync(broker);
        var held = new TaskCompletionSource();
        var first = new ReceivePipeline(Subscription, async (delivery, ct) =>
        {
            held.TrySetResult();
            await Task.Delay(Timeout.Infinite, ct); // held until the abort cancels it
        }, null, null, "InMemory");
        await first.StartAsync(transport, Wait.TestToken);
        await transport.PublishAsync("topic", [Event("a")], Wait.TestToken);
        await Wait.ForAsync(held.Task, "A is held by a handler");
        await transport.PublishAsync("topic", [Event("b")], Wait.TestToken); // the queue is full again
        await Wait.ForAsync(first.DisposeAsync().AsTask(), "the abort"); // gives A back to the full queue

        var handled = new ConcurrentBag<string>();
        await using var second = new ReceivePipeline(Subscription, (delivery, ct) =>
        {
            handled.Add(delivery.Event!.Id!);
            return delivery.CompleteAsync(ct);
        }, null, null, "InMemory");
        await second.StartAsync(transport, Wait.TestToken);
        await Wait.UntilAsync(() => handled.Count == 2, "both A (given back) and B are handled");
        Assert.Equal(["a", "b"], handled.Order());
    }
}
