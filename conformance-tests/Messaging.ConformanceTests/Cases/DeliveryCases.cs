using System.Diagnostics;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.Hosting;

namespace Messaging.ConformanceTests.Cases;

public abstract partial class ConformanceSuite<TFixture>
{
    [Fact(Timeout = 60_000)]
    public Task Delivery_fan_out_every_subscription_gets_every_event() => Case(async () =>
    {
        var (topic, _) = Names();
        var subs = new[] { SubscriptionOf(topic, "a"), SubscriptionOf(topic, "b"), SubscriptionOf(topic, "c") };
        var probe = new Probe();
        await using var host = await StartWithLongLeasesAsync(probe, m =>
        {
            foreach (var s in subs)
            {
                Subscribe(topic, s)(m);
            }
        });
        var events = Enumerable.Range(0, 50).Select(_ => NewEvent()).ToList();
        await host.Publisher.PublishBatchAsync(topic, events, Ct);
        await Wait.UntilAsync(() => probe.Handled.Count >= 150, "every subscription handled every event");
        foreach (var s in subs)
        {
            Assert.Equal(events.Select(e => e.Id).Order(), probe.Handled.Where(h => h.Subscription == s).Select(h => h.Event.Id).Order());
        }
    });

    [Fact(Timeout = 300_000)]
    public Task Delivery_competing_consumers_handle_each_of_10000_events_once() => Case(async () =>
    {
        var (topic, sub) = Names();
        var probe = new Probe();
        var configure = Subscribe(topic, sub, s => s.WithConcurrency(8).WithPrefetch(100));
        await using var first = await StartWithLongLeasesAsync(probe, configure);
        await using var second = await StartWithLongLeasesAsync(probe, configure);
        const int count = 10_000;
        var events = Enumerable.Range(0, count).Select(_ => NewEvent()).ToList();
        foreach (var chunk in events.Chunk(500))
        {
            await first.Publisher.PublishBatchAsync(topic, chunk, Ct);
        }
        await Wait.UntilAsync(() => probe.Handled.Count >= count, $"{count} events are handled", TimeSpan.FromMinutes(3));
        var ids = probe.Handled.Select(h => h.Event.Id!).ToList();
        Assert.Equal(count, ids.Distinct().Count());
        Assert.Equal(count, ids.Count); // no duplicates in normal operation
        Assert.Equal(events.Select(e => e.Id).Order(), ids.Order());
        // How the work was shared is reported, not asserted: fairness is not promised (the in-memory transport's
        // consumers pull greedily, RabbitMQ pushes round-robin); handling each event exactly once is.
        var perHost = probe.Handled.GroupBy(h => h.Host).Select(g => g.Count());
        TestContext.Current.SendDiagnosticMessage($"{Fixture.TransportName}: events per consumer: {string.Join(", ", perHost)}");
    });

    [Fact(Timeout = 150_000)]
    public Task Delivery_publish_completes_after_durable_accept_and_offline_consumer_catches_up() => Case(async () =>
    {
        var (topic, sub) = Names();
        var probe = new Probe();
        // Provision, then stop: the subscription exists but no consumer is running.
        var provisioner = await StartWithLongLeasesAsync(probe, Subscribe(topic, sub));
        await provisioner.StopAsync();
        await provisioner.DisposeAsync();

        await using var publisherOnly = await StartWithLongLeasesAsync(new Probe(), m => m.AddTopic(topic));
        var events = Enumerable.Range(0, 25).Select(_ => NewEvent()).ToList();
        await publisherOnly.Publisher.PublishBatchAsync(topic, events, Ct);
        Assert.Empty(probe.Attempts);

        await using var consumer = await StartWithLongLeasesAsync(probe, Subscribe(topic, sub));
        // SNS/SQS: the stopped provisioner's long polls outlive it by up to 20 s, as on AWS, and may each take events for
        // nobody, hiding them for a visibility timeout: the catch-up can take WaitTimeSeconds + the lease.
        await Wait.UntilAsync(() => probe.Handled.Count == 25, "the offline consumer caught up", TimeSpan.FromSeconds(90));
        Assert.Equal(events.Select(e => e.Id).Order(), probe.Handled.Select(h => h.Event.Id).Order());
    });

    [Fact(Timeout = 60_000)]
    public Task Delivery_publish_to_a_topic_that_does_not_exist_fails() => Case(async () =>
    {
        var (topic, sub) = Names();
        await using var host = await StartAsync(new Probe(), Subscribe(topic, sub));
        var missing = "ct-missing-" + Guid.NewGuid().ToString("N")[..8];
        await Assert.ThrowsAnyAsync<Exception>(() => host.Publisher.PublishAsync(missing, NewEvent(), Ct));
    });

    [Fact(Timeout = 60_000)]
    public Task Delivery_concurrency_limit_is_never_exceeded() => Case(async () =>
    {
        var (topic, sub) = Names();
        var probe = new Probe { Behaviour = (_, ct) => Task.Delay(40, ct) };
        await using var host = await StartWithLongLeasesAsync(probe, Subscribe(topic, sub, s => s.WithConcurrency(3).WithPrefetch(50)));
        await host.Publisher.PublishBatchAsync(topic, Enumerable.Range(0, 60).Select(_ => NewEvent()), Ct);
        await Wait.UntilAsync(() => probe.Handled.Count == 60, "all events are handled");
        Assert.InRange(probe.MaxConcurrent, 2, 3);
    });

    [Fact(Timeout = 200_000)]
    public Task Lifecycle_stop_under_load_returns_within_its_deadline_and_loses_nothing() => Case(async () =>
    {
        var (topic, sub) = Names();
        var slow = 1;
        var probe = new Probe
        {
            // Long handlers that honour their token, as handlers should: the stop's deadline cancels them.
            Behaviour = (_, ct) => Volatile.Read(ref slow) == 1 ? Task.Delay(TimeSpan.FromSeconds(60), ct) : Task.CompletedTask,
        };
        var configure = Subscribe(topic, sub, s => s.WithConcurrency(4).WithPrefetch(20).WithMaxAttempts(10));
        var first = await StartAsync(probe, configure);
        var events = Enumerable.Range(0, 100).Select(_ => NewEvent()).ToList();
        await first.Publisher.PublishBatchAsync(topic, events, Ct);
        await Wait.UntilAsync(() => probe.Attempts.Count >= 4, "every handler slot is busy");
        // The stop's deadline is 2 s; it must return, whatever is held, waiting or running, rather than wait for the 60 s
        // handlers (45 s is still short of them). The bounds guard against a hang, not for speed: a loaded machine may take
        // far longer than 2 s to wind down.
        await first.StopAsync(TimeSpan.FromSeconds(2)).WaitAsync(TimeSpan.FromSeconds(45), Ct);
        await first.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(45), Ct);

        Volatile.Write(ref slow, 0);
        await using var second = await StartAsync(probe, configure);
        await Wait.UntilAsync(() => probe.Handled.Select(h => h.Event.Id).Distinct().Count() == events.Count,
            "every event is handled after the forced stop", TimeSpan.FromSeconds(90));
    });

    [Fact(Timeout = 180_000)]
    public Task Lifecycle_graceful_stop_lets_in_flight_handlers_finish_and_loses_nothing() => Case(async () =>
    {
        var (topic, sub) = Names();
        var started = 0;
        var probe = new Probe
        {
            Behaviour = async (_, ct) =>
            {
                Interlocked.Increment(ref started);
                await Task.Delay(300, ct);
            },
        };
        var configure = Subscribe(topic, sub, s => s.WithConcurrency(4).WithPrefetch(4));
        var first = await StartWithLongLeasesAsync(probe, configure);
        var events = Enumerable.Range(0, 40).Select(_ => NewEvent()).ToList();
        await first.Publisher.PublishBatchAsync(topic, events, Ct);
        await Wait.UntilAsync(() => Volatile.Read(ref started) >= 4, "handlers are in flight");
        await first.StopAsync(TimeSpan.FromSeconds(20));
        // Every handler that started before the stop finished (none was cancelled).
        Assert.Equal(probe.Attempts.Count, probe.Handled.Count);
        await first.DisposeAsync();

        await using var second = await StartWithLongLeasesAsync(probe, configure);
        // Long leases, so that a second handling can only be a delivery the stop failed to settle; SNS/SQS: a given-back event
        // taken by one of the stopped host's long polls (they outlive it by up to 20 s, as on AWS) is hidden for that lease.
        await Wait.UntilAsync(() => probe.Handled.Select(h => h.Event.Id).Distinct().Count() == 40, "the rest is handled after restart", TimeSpan.FromSeconds(120));
        Assert.Equal(events.Select(e => e.Id).Order(), probe.Handled.Select(h => h.Event.Id).Distinct().Order());
        // What was handled before the stop was settled by the stop: nothing comes back a second time.
        var handledTwice = probe.Handled.GroupBy(h => h.Event.Id).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
        Assert.True(handledTwice.Count == 0, $"{handledTwice.Count} event(s) were handled again after a graceful stop: {string.Join(", ", handledTwice.Take(5))}");
    });

    [Fact(Timeout = 60_000)]
    public Task Delivery_typed_publish_fills_attributes_by_convention_and_batches() => Case(async () =>
    {
        var (topic, sub) = Names();
        var probe = new Probe();
        await using var host = await StartWithLongLeasesAsync(probe, m =>
        {
            m.MapEvent<OrderPlaced>(topic, "com.example.order.placed");
            m.AddSubscription(sub, topic, s => s.Handle<OrderPlaced, OrderPlacedRecorder>());
        }, new Dictionary<string, string?> { ["Messaging:Source"] = "urn:conformance:orders" });
        var before = DateTimeOffset.UtcNow.AddSeconds(-1);
        var sent = await host.Publisher.PublishAsync(new OrderPlaced("o-1", 12.5m), e => e.Subject = "orders/o-1", Ct);
        var batch = Enumerable.Range(2, 3).Select(i => host.Publisher.CreateEvent(new OrderPlaced($"o-{i}", i))).ToList();
        await host.Publisher.PublishBatchAsync(topic, batch, Ct);

        await Wait.UntilAsync(() => OrderPlacedRecorder.Seen.Count(s => s.Context.Subscription == sub) == 4, "four typed events are handled");
        var seen = OrderPlacedRecorder.Seen.Where(s => s.Context.Subscription == sub).ToList();
        var first = seen.Single(s => s.Data.OrderId == "o-1");
        Assert.Equal(12.5m, first.Data.Total);
        Assert.Equal(sent.Id, first.Context.Event.Id);
        Assert.Equal("com.example.order.placed", first.Context.Event.Type);
        Assert.Equal(new Uri("urn:conformance:orders"), first.Context.Event.Source);
        Assert.Equal("application/json", first.Context.Event.DataContentType);
        Assert.Equal("orders/o-1", first.Context.Event.Subject);
        Assert.True(Guid.TryParse(first.Context.Event.Id, out var guid) && guid.Version == 7, "id is a UUIDv7");
        Assert.InRange(first.Context.Event.Time!.Value, before, DateTimeOffset.UtcNow.AddSeconds(1));
        Assert.Equal(["o-1", "o-2", "o-3", "o-4"], seen.Select(s => s.Data.OrderId).Order());
    });

    [Fact(Timeout = 60_000)]
    public Task Delivery_trace_context_travels_with_the_event() => Case(async () =>
    {
        var (topic, sub) = Names();
        var probe = new Probe();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == Diagnostics.MessagingDiagnostics.SourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
        };
        ActivitySource.AddActivityListener(listener);
        await using var host = await StartWithLongLeasesAsync(probe, Subscribe(topic, sub));
        using var source = new ActivitySource("conformance");
        using var outer = new Activity("request").SetIdFormat(ActivityIdFormat.W3C).Start();
        var sent = NewEvent();
        await host.Publisher.PublishAsync(topic, sent, Ct);
        outer.Stop();
        await Wait.UntilAsync(() => probe.Handled.Count == 1, "the event is handled");
        var got = probe.Handled.Single();
        var traceParent = Assert.IsType<string>(got.Event["traceparent"]);
        Assert.Contains(outer.TraceId.ToHexString(), traceParent, StringComparison.Ordinal);
        // The process span is a child of the publish span, in the same trace.
        Assert.NotNull(got.TraceParentOfActivity);
        Assert.Contains(outer.TraceId.ToHexString(), got.TraceParentOfActivity!, StringComparison.Ordinal);
    });
}

public sealed record OrderPlaced(string OrderId, decimal Total);

public sealed class OrderPlacedRecorder : Messaging.Handling.IEventHandler<OrderPlaced>
{
    public static System.Collections.Concurrent.ConcurrentQueue<(OrderPlaced Data, Messaging.Handling.EventContext Context)> Seen { get; } = new();

    public Task HandleAsync(OrderPlaced data, Messaging.Handling.EventContext context, CancellationToken cancellationToken)
    {
        Seen.Enqueue((data, context));
        return Task.CompletedTask;
    }
}
