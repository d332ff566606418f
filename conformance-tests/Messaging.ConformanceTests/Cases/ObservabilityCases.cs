using System.Diagnostics.Metrics;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.Diagnostics;

namespace Messaging.ConformanceTests.Cases;

public abstract partial class ConformanceSuite<TFixture>
{
    [Fact(Timeout = 60_000)]
    public Task Observability_metrics_count_published_consumed_failed_and_dead_lettered() => Case(async () =>
    {
        var (topic, sub) = Names();
        var counts = new System.Collections.Concurrent.ConcurrentDictionary<string, long>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == MessagingDiagnostics.SourceName)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if ((tag.Key == "messaging.destination.subscription.name" && (string?)tag.Value == sub)
                    || (tag.Key == "messaging.destination.name" && (string?)tag.Value == topic && instrument.Name == "messaging.client.sent.messages"))
                {
                    counts.AddOrUpdate(instrument.Name, value, (_, v) => v + value);
                    return;
                }
            }
        });
        listener.SetMeasurementEventCallback<double>((instrument, _, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == "messaging.destination.subscription.name" && (string?)tag.Value == sub)
                {
                    counts.AddOrUpdate(instrument.Name, 1, (_, v) => v + 1);
                    return;
                }
            }
        });
        listener.Start();

        var probe = new Probe { Behaviour = (c, _) => c.Event.Subject == "bad" ? throw new InvalidOperationException("bad") : Task.CompletedTask };
        await using var host = await StartWithLongLeasesAsync(probe, Subscribe(topic, sub, s => s.WithMaxAttempts(2).WithBackoff(Policy.Backoff.Immediate)));
        var good = Enumerable.Range(0, 3).Select(_ => NewEvent()).ToList();
        var bad = NewEvent();
        bad.Subject = "bad";
        await host.Publisher.PublishBatchAsync(topic, [.. good, bad], Ct);
        // The counters move on different threads as each delivery finishes (the last duration may be recorded after the dead
        // letter): wait until every one has reached its count, then check that none went past it.
        await Wait.UntilAsync(() => counts.GetValueOrDefault("messaging.process.dead_lettered.messages") >= 1
            && counts.GetValueOrDefault("messaging.client.sent.messages") >= 4
            && counts.GetValueOrDefault("messaging.client.consumed.messages") >= 5
            && counts.GetValueOrDefault("messaging.process.failed.messages") >= 2
            && counts.GetValueOrDefault("messaging.process.duration") >= 5, "every counter has moved");

        Assert.Equal(1, counts.GetValueOrDefault("messaging.process.dead_lettered.messages"));
        Assert.Equal(4, counts.GetValueOrDefault("messaging.client.sent.messages"));
        Assert.Equal(5, counts.GetValueOrDefault("messaging.client.consumed.messages")); // 3 good + 2 attempts of the bad one
        Assert.Equal(2, counts.GetValueOrDefault("messaging.process.failed.messages"));
        Assert.Equal(5, counts.GetValueOrDefault("messaging.process.duration"));
    });
}
