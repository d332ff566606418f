using Messaging.Topology;
using Messaging.Transport;

namespace Messaging.Tests.Infrastructure;

/// <summary>A started <see cref="ReceivePipeline"/> over a <see cref="FakeTransport"/> and <see cref="FakeReceiver"/>.</summary>
internal sealed class PipelineHarness : IAsyncDisposable
{
    private PipelineHarness(ReceivePipeline pipeline, FakeReceiver receiver, CallLog log)
    {
        Pipeline = pipeline;
        Receiver = receiver;
        Log = log;
    }

    public ReceivePipeline Pipeline { get; }

    public FakeReceiver Receiver { get; }

    /// <summary>The receiver's stop calls and every message's settlement calls, in order.</summary>
    public CallLog Log { get; }

    public static SubscriptionDefinition Subscription(int concurrency, int prefetch = 0, bool ordered = false) => new()
    {
        Name = "orders.billing",
        Topic = "orders",
        Concurrency = concurrency,
        Prefetch = prefetch,
        Ordered = ordered,
    };

    public static async Task<PipelineHarness> StartAsync(
        SubscriptionDefinition subscription,
        DeliveryCallback onDelivery,
        StopBehavior stopBehavior = StopBehavior.ReturnUnstarted,
        TimeSpan? leaseRenewalInterval = null,
        TimeProvider? time = null,
        bool returnsTogether = false)
    {
        var log = new CallLog();
        var receiver = new FakeReceiver(log) { StopBehavior = stopBehavior, LeaseRenewalInterval = leaseRenewalInterval, ReturnsTogether = returnsTogether };
        var pipeline = new ReceivePipeline(subscription, onDelivery, logger: null, time, "fake");
        await pipeline.StartAsync(new FakeTransport(receiver), Wait.TestToken);
        return new PipelineHarness(pipeline, receiver, log);
    }

    public FakeMessage NewMessage(string id, string? orderingKey = null) => new(id, orderingKey, Log);

    /// <summary>Submits a new message the way a push transport does (no reservation).</summary>
    public FakeMessage Submit(string id, string? orderingKey = null)
    {
        var message = NewMessage(id, orderingKey);
        Pipeline.Submit(message);
        return message;
    }

    /// <summary>Submits a message built by the test (to make a settlement throw, for instance).</summary>
    public FakeMessage Submit(FakeMessage message)
    {
        Pipeline.Submit(message);
        return message;
    }

    /// <summary>A graceful stop with a deadline that is never reached unless the test fails.</summary>
    public Task StopAsync() => Wait.ForAsync(Pipeline.StopAsync(Wait.TestToken), "the pipeline to stop");

    public ValueTask DisposeAsync() => Pipeline.DisposeAsync();
}
