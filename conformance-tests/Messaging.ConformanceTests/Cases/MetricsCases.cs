using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.Diagnostics;
using Messaging.Topology;

namespace Messaging.ConformanceTests.Cases;

/// <summary>
/// The backlog gauges (<c>messaging.subscription.backlog</c>, <c>.dead_letters</c>) on each transport: they follow the
/// subscription's queue as it fills and drains, and its dead-letter destination; a value the transport cannot give
/// (a null in <see cref="Transport.IMessageTransport.GetBacklogAsync"/>) is never reported.
/// </summary>
public abstract partial class ConformanceSuite<TFixture>
{
    private const string BacklogGauge = "messaging.subscription.backlog";
    private const string DeadLettersGauge = "messaging.subscription.dead_letters";
    private const string MetricsRejectedType = "com.example.conformance.metrics.reject-me";

    /// <summary>The gauges' last measurements of one subscription, by instrument name, from one collection.</summary>
    private static Dictionary<string, double> ObserveBacklog(string subscription)
    {
        var seen = new ConcurrentDictionary<string, double>(StringComparer.Ordinal);
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == MessagingDiagnostics.SourceName && instrument.Name.StartsWith("messaging.subscription.", StringComparison.Ordinal))
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        void Record(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            foreach (var tag in tags)
            {
                if (tag.Key == "messaging.destination.subscription.name" && (string?)tag.Value == subscription)
                {
                    seen[instrument.Name] = value;
                    return;
                }
            }
        }
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => Record(instrument, value, tags));
        listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) => Record(instrument, value, tags));
        listener.Start();
        listener.RecordObservableInstruments();
        return new Dictionary<string, double>(seen, StringComparer.Ordinal);
    }

    private static Task BacklogUntilAsync(string subscription, Func<Dictionary<string, double>, bool> condition, string what) =>
        Wait.UntilAsync(() => condition(ObserveBacklog(subscription)), what, TimeSpan.FromSeconds(90));

    [Fact(Timeout = 240_000)]
    public Task Metrics_backlog_gauges_follow_the_queue_as_it_fills_and_drains_and_the_dead_letters() => Case(async () =>
    {
        const int count = 20;
        var (topic, sub) = Names();
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var probe = new Probe
        {
            Behaviour = async (context, cancellationToken) =>
            {
                if (context.Event.Type == MetricsRejectedType)
                {
                    throw new Messaging.Handling.UnprocessableEventException("rejected by the metrics case");
                }
                await gate.Task.WaitAsync(cancellationToken);
            },
        };
        var settings = new Dictionary<string, string?> { ["Messaging:Metrics:BacklogPollingInterval"] = "00:00:00.200" };
        // One handler and one message ahead of it: the rest of what is published waits in the queue while the handler blocks.
        await using var host = await StartWithLongLeasesAsync(probe, Subscribe(topic, sub, s => s.WithConcurrency(1).WithPrefetch(1)), settings);
        try
        {
            var reported = await host.Transport.GetBacklogAsync(new SubscriptionDefinition { Name = sub, Topic = topic }, Ct);
            var reportsWaiting = reported?.Waiting is not null;
            var reportsDeadLetters = reported?.DeadLetters is not null;

            var events = Enumerable.Range(0, count).Select(_ => NewEvent()).ToList();
            await host.Publisher.PublishBatchAsync(topic, events, Ct);
            await Wait.UntilAsync(() => !probe.Attempts.IsEmpty, "the first event reaches the blocked handler", TimeSpan.FromSeconds(60));
            if (reportsWaiting)
            {
                // At most a few are held by the consumer; the others wait at the broker.
                await BacklogUntilAsync(sub, m => m.GetValueOrDefault(BacklogGauge) >= count / 2, $"the backlog gauge reports at least {count / 2} waiting messages");
            }
            else if (reportsDeadLetters)
            {
                await BacklogUntilAsync(sub, m => m.ContainsKey(DeadLettersGauge), "the poller has read the subscription");
                Assert.False(ObserveBacklog(sub).ContainsKey(BacklogGauge), "a transport that cannot count waiting messages must not report the backlog gauge");
            }

            gate.SetResult();
            await Wait.UntilAsync(() => probe.Handled.Select(h => h.Event.Id).Distinct().Count() >= count, "every event is handled", TimeSpan.FromSeconds(120));
            if (reportsWaiting)
            {
                await BacklogUntilAsync(sub, m => m.TryGetValue(BacklogGauge, out var waiting) && waiting == 0, "the backlog gauge reports the drained queue");
            }

            var rejected = NewEvent(MetricsRejectedType);
            await host.Publisher.PublishAsync(topic, rejected, Ct);
            if (reportsDeadLetters)
            {
                await BacklogUntilAsync(sub, m => m.GetValueOrDefault(DeadLettersGauge) >= 1, "the dead-letter gauge reports the rejected event");
            }
            else
            {
                await Wait.UntilAsync(
                    async () => await host.DeadLetters.PeekAsync(sub, 10, Ct), d => d.Any(x => x.Event?.Id == rejected.Id), "the rejected event is dead-lettered");
                Assert.False(ObserveBacklog(sub).ContainsKey(DeadLettersGauge), "a transport that cannot count dead letters must not report the dead-letter gauge");
            }

            if (!reportsWaiting || !reportsDeadLetters)
            {
                DeclaredUnsupported();
            }
        }
        finally
        {
            gate.TrySetResult();
        }
    });
}
