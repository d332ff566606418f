using Messaging.ConformanceTests.Infrastructure;

namespace Messaging.ConformanceTests.Cases;

public abstract partial class ConformanceSuite<TFixture>
{
    [Fact(Timeout = 60_000)]
    public Task Capability_ordering_keys_in_publish_order_or_refused() => Case(async () =>
    {
        var (topic, sub) = Names();
        var probe = new Probe();
        var configure = Subscribe(topic, sub, s => s.Ordered().WithConcurrency(4));
        var host = ConformanceHost.Build(Fixture, probe, configure);
        try
        {
            var transport = (Transport.IMessageTransport)host.Services.GetService(typeof(Transport.IMessageTransport))!;
            if (!transport.Capabilities.OrderingKeys)
            {
                var error = await Assert.ThrowsAsync<NotSupportedException>(() => host.StartAsync(Ct));
                Assert.Contains("ordering", error.Message, StringComparison.OrdinalIgnoreCase);
                DeclaredUnsupported();
                return;
            }
            await host.StartAsync(Ct);
            var publisher = (Publishing.IEventPublisher)host.Services.GetService(typeof(Publishing.IEventPublisher))!;
            var events = Enumerable.Range(0, 60).Select(i =>
            {
                var e = NewEvent();
                e["partitionkey"] = $"key-{i % 3}";
                return e;
            }).ToList();
            foreach (var e in events)
            {
                await publisher.PublishAsync(topic, e, Ct);
            }
            await Wait.UntilAsync(() => probe.Handled.Count == 60, "all ordered events are handled");
            foreach (var key in events.GroupBy(e => (string)e["partitionkey"]!))
            {
                Assert.Equal(key.Select(e => e.Id), probe.Handled.Where(h => (string?)h.Event["partitionkey"] == key.Key).Select(h => h.Event.Id));
            }
            await host.StopAsync(Ct);
        }
        finally
        {
            host.Dispose();
        }
    });

    [Fact(Timeout = 360_000)]
    public Task Lifecycle_broker_restart_mid_stream_loses_nothing_and_consumption_resumes() => Case(async () =>
    {
        var (topic, sub) = Names();
        var probe = new Probe();
        // Every publish must ride through the restart. A publish waiting for the broker to come back waits up to its
        // PublishTimeout; rabbitmqctl stop_app/start_app alone can take longer than the default 30 s on a loaded machine.
        var settings = new Dictionary<string, string?> { ["Messaging:RabbitMQ:PublishTimeout"] = "00:02:00" };
        await using var host = await StartAsync(probe, Subscribe(topic, sub, s => s.WithConcurrency(4)), settings);
        if (!host.Transport.Capabilities.SurvivesBrokerRestart)
        {
            // The transport itself says its broker keeps nothing across a restart (in-memory, an emulator).
            DeclaredUnsupported();
            return;
        }
        if (!Fixture.CanRestartBroker)
        {
            // A broker that survives restarts must be restarted to prove it; only a laptop may skip that.
            Assert.SkipWhen(!Required(Fixture.TransportName), $"{Fixture.TransportName}: the suite cannot restart this broker.");
            Assert.Fail($"{Fixture.TransportName} declares that it survives a broker restart, but the suite cannot restart this broker to prove it.");
        }
        var published = new System.Collections.Concurrent.ConcurrentBag<string>();
        using var stop = new CancellationTokenSource();
        var publishing = Task.Run(async () =>
        {
            for (var i = 0; i < 400 && !stop.IsCancellationRequested; i++)
            {
                var e = NewEvent();
                await host.Publisher.PublishAsync(topic, e, Ct);
                published.Add(e.Id!);
                await Task.Delay(10, Ct);
            }
        }, Ct);
        await Wait.UntilAsync(() => probe.Handled.Count >= 50, "consumption is under way");
        await Fixture.RestartBrokerAsync(Ct);
        await publishing.WaitAsync(TimeSpan.FromSeconds(180), Ct);
        Assert.Equal(400, published.Count);
        await Wait.UntilAsync(() => published.All(id => probe.Handled.Any(h => h.Event.Id == id)), "every published event is handled after the restart", TimeSpan.FromSeconds(90));
    });
}
