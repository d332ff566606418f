using System.Collections.Concurrent;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.DeadLetters;
using Messaging.Policy;

namespace Messaging.ConformanceTests.Cases;

public abstract partial class ConformanceSuite<TFixture>
{
    /// <summary>
    /// 5 keys × 400 events, interleaved; handlers fail 10% of attempts (seeded) with MaxAttempts 3; two competing hosts, the
    /// busier one killed (its connections dropped, nothing settled) a third of the way in. Per key, the first successful
    /// handling of each event comes after the first successful handling of every earlier event of the key, except those
    /// dead-lettered, whose last attempt comes before; every event is handled or dead-lettered. A replay of events the
    /// killed host had not acknowledged is allowed (at-least-once); an event overtaking an earlier one of its key is not.
    /// </summary>
    [Fact(Timeout = 600_000)]
    public Task Ordering_keys_keep_publish_order_through_retries_and_a_killed_consumer() => Case(async () =>
    {
        const int Keys = 5;
        const int PerKey = 400;
        const int Seed = 20261201;
        var (topic, sub) = Names();
        var order = new ConcurrentDictionary<string, (int Key, int Seq)>();
        var probe = new Probe
        {
            Behaviour = (context, _) =>
            {
                var (key, seq) = order[context.Event.Id!];
                // Seeded, so every run fails the same attempts: about one attempt in ten, and every attempt of #42, #142, ...
                // of each key, which are dead-lettered and must not hold their key up for good.
                if (seq % 100 == 42 || new Random(Seed + (key * 100_000) + (seq * 8) + context.Attempt).Next(100) < 10)
                {
                    throw new InvalidOperationException($"key-{key} #{seq} fails attempt {context.Attempt}");
                }
                return Task.CompletedTask;
            },
        };
        var configure = Subscribe(topic, sub, s => s.Ordered().WithConcurrency(4).WithMaxAttempts(3).WithBackoff(Backoff.Fixed(TimeSpan.FromMilliseconds(50))));
        if (!await OrderingSupportedAsync(probe, configure))
        {
            return;
        }

        // The publisher is a third host, so that killing a consumer never stops the publishing.
        await using var publisher = await StartAsync(probe, m => m.AddTopic(topic));
        var first = await StartAsync(probe, configure);
        var second = await StartAsync(probe, configure);
        try
        {
            var events = new List<CloudNative.CloudEvents.CloudEvent>(Keys * PerKey);
            for (var seq = 0; seq < PerKey; seq++)
            {
                for (var key = 0; key < Keys; key++)
                {
                    var e = NewEvent();
                    e["partitionkey"] = $"key-{key}";
                    order[e.Id!] = (key, seq);
                    events.Add(e);
                }
            }
            var publishing = Task.Run(async () =>
            {
                foreach (var e in events)
                {
                    await publisher.Publisher.PublishAsync(topic, e, Ct);
                }
            }, Ct);

            await Wait.UntilAsync(() => probe.Handled.Count >= events.Count / 3, "a third of the events are handled", TimeSpan.FromSeconds(180));
            var busiest = probe.Handled.GroupBy(h => h.Host).OrderByDescending(g => g.Count()).First().Key;
            var killed = first.Services.GetService(typeof(HostIdentity)) is HostIdentity { Name: var name } && name == busiest ? first : second;
            var survivor = ReferenceEquals(killed, first) ? second : first;
            var killedAt = probe.Now;
            await killed.CrashAsync();
            await publishing.WaitAsync(TimeSpan.FromSeconds(180), Ct);

            // Every event ends handled or dead-lettered; the survivor reads the dead letters.
            var deadLettered = new HashSet<string>(StringComparer.Ordinal);
            var deadline = DateTime.UtcNow.AddSeconds(300);
            while (true)
            {
                deadLettered.UnionWith((await survivor.DeadLetters.PeekAsync(sub, 1000, Ct)).Select(d => d.Event?.Id).OfType<string>());
                var handled = probe.Handled.Select(h => h.Event.Id!).ToHashSet(StringComparer.Ordinal);
                if (events.All(e => handled.Contains(e.Id!) || deadLettered.Contains(e.Id!)) || DateTime.UtcNow > deadline)
                {
                    break;
                }
                await Task.Delay(250, Ct);
            }
            var handledIds = probe.Handled.Select(h => h.Event.Id!).ToHashSet(StringComparer.Ordinal);
            var lost = events.Where(e => !handledIds.Contains(e.Id!) && !deadLettered.Contains(e.Id!)).Select(e => order[e.Id!]).ToList();
            Assert.True(lost.Count == 0, $"{lost.Count} event(s) neither handled nor dead-lettered, e.g. {string.Join(", ", lost.Take(5).Select(l => $"key-{l.Key} #{l.Seq}"))}");

            var firstHandled = probe.Handled.GroupBy(h => h.Event.Id!).ToDictionary(g => g.Key, g => g.Min(h => h.At), StringComparer.Ordinal);
            // When a dead-lettered event was done with: its first attempt at MaxAttempts (3). A killed host's dead-letter may
            // not have been acknowledged, so the event can be delivered and tried again after the kill: a replay, allowed
            // as for handled events, which does not move the point where the key moved on.
            var lastAttempt = probe.Attempts.GroupBy(a => a.Event.Id!).ToDictionary(
                g => g.Key,
                g => g.Where(a => a.Attempt >= 3).Select(a => (TimeSpan?)a.At).Min() ?? g.Max(a => a.At),
                StringComparer.Ordinal);
            var violations = new List<string>();
            // A broker known to reorder a key right after a consumer crash (the Pub/Sub emulator): an event the killed host
            // held but never started may be overtaken, within the window, by later events of its key; counted, not failed.
            var crashWindow = Fixture.KeyReorderWindowAfterCrash;
            var tolerated = 0;
            // The overtaken event is the one whose handling set the point the key had reached.
            bool KnownBrokerReorder(TimeSpan at, string overtaken) =>
                crashWindow is { } window && at >= killedAt && at <= killedAt + window
                && !probe.Attempts.Any(a => a.Event.Id == overtaken && (a.Host == busiest || a.At < killedAt));
            string Who(string id) => string.Join(" ", probe.Attempts.Where(a => a.Event.Id == id).Select(a => $"{(a.Host == busiest ? "killed" : "survivor")}@{a.At.TotalMilliseconds:0}ms#{a.Attempt}"));
            foreach (var key in events.GroupBy(e => order[e.Id!].Key))
            {
                var sequence = key.OrderBy(e => order[e.Id!].Seq).Select(e => e.Id!).ToList();
                // Walking the key in publish order: the latest point by which every earlier event was done with.
                var earlierDone = TimeSpan.MinValue;
                string? earlierId = null;
                string? doneBy = null;
                foreach (var id in sequence)
                {
                    if (firstHandled.TryGetValue(id, out var at))
                    {
                        if (at < earlierDone && KnownBrokerReorder(at, doneBy!))
                        {
                            tolerated++;
                        }
                        else if (at < earlierDone && violations.Count < 5)
                        {
                            violations.Add($"key-{key.Key} #{order[id].Seq} was first handled at {at.TotalMilliseconds:0.0} ms by {Who(id)}, before #{order[earlierId!].Seq} was done with ({earlierDone.TotalMilliseconds:0.0} ms, by {Who(earlierId!)}); the kill was at {killedAt.TotalMilliseconds:0.0} ms");
                        }
                        if (!deadLettered.Contains(id))
                        {
                            if (at > earlierDone)
                            {
                                earlierDone = at;
                                doneBy = id;
                            }
                            earlierId = id;
                            continue;
                        }
                    }
                    // Dead-lettered: its last attempt must start before any later event of the key.
                    if (lastAttempt.TryGetValue(id, out var last) && last > earlierDone)
                    {
                        earlierDone = last;
                        earlierId = doneBy = id;
                    }
                }
            }
            var retried = probe.Attempts.Count(a => a.Attempt > 1);
            TestContext.Current.TestOutputHelper?.WriteLine(
                $"{Fixture.TransportName}: {handledIds.Count} handled ({probe.Handled.Count - handledIds.Count} replayed after the kill), {deadLettered.Count} dead-lettered, {retried} retried attempts, {tolerated} overtakings in the broker's known reorder window after the kill");
            Assert.True(violations.Count == 0, string.Join(Environment.NewLine, violations));
            Assert.True(retried > 0, "The seeded failures must have caused retries.");
            Assert.True(deadLettered.Count >= Keys * PerKey / 100, $"Events that fail every attempt must be dead-lettered; {deadLettered.Count} were.");
            Assert.Contains(probe.Handled, h => h.Host != busiest); // the survivor took over
        }
        finally
        {
            await first.DisposeAsync();
            await second.DisposeAsync();
        }
    });

    /// <summary>
    /// On an ordered subscription an event without a <c>partitionkey</c> has no order to keep: it is handled as on an
    /// unordered subscription (concurrently with the others, retried by the broker), on every transport that orders.
    /// </summary>
    [Fact(Timeout = 120_000)]
    public Task Ordering_events_without_a_key_on_an_ordered_subscription_are_handled_without_order() => Case(async () =>
    {
        var (topic, sub) = Names();
        var failOnce = new ConcurrentDictionary<string, byte>();
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var probe = new Probe
        {
            Behaviour = async (context, ct) =>
            {
                if ((string?)context.Event["subject"] == "slow")
                {
                    await gate.Task.WaitAsync(ct); // holds one event until a later one was handled: no order between them
                }
                if ((string?)context.Event["subject"] == "flaky" && failOnce.TryAdd(context.Event.Id!, 0))
                {
                    throw new InvalidOperationException("first attempt fails");
                }
            },
        };
        var configure = Subscribe(topic, sub, s => s.Ordered().WithConcurrency(4));
        if (!await OrderingSupportedAsync(probe, configure))
        {
            return;
        }
        await using var host = await StartAsync(probe, configure);
        var slow = NewEvent();
        slow["subject"] = "slow";
        var flaky = NewEvent();
        flaky["subject"] = "flaky";
        var plain = Enumerable.Range(0, 10).Select(_ => NewEvent()).ToList();
        await host.Publisher.PublishAsync(topic, slow, Ct);
        await host.Publisher.PublishAsync(topic, flaky, Ct);
        foreach (var e in plain)
        {
            await host.Publisher.PublishAsync(topic, e, Ct);
        }

        await Wait.UntilAsync(() => plain.All(e => probe.Handled.Any(h => h.Event.Id == e.Id)), "the keyless events behind the held one are handled", TimeSpan.FromSeconds(60));
        gate.SetResult();
        await Wait.UntilAsync(() => probe.Handled.Any(h => h.Event.Id == slow.Id) && probe.Handled.Any(h => h.Event.Id == flaky.Id), "the held and the failing events are handled", TimeSpan.FromSeconds(60));
        Assert.Equal(2, probe.Handled.Single(h => h.Event.Id == flaky.Id).Attempt);
    });

    /// <summary>Starts nothing when the transport refuses ordered subscriptions at start-up, as it must when it cannot order.</summary>
    private async Task<bool> OrderingSupportedAsync(Probe probe, Action<Hosting.MessagingBuilder> configure)
    {
        using var host = ConformanceHost.Build(Fixture, probe, configure);
        var transport = (Transport.IMessageTransport)host.Services.GetService(typeof(Transport.IMessageTransport))!;
        if (transport.Capabilities.OrderingKeys)
        {
            return true;
        }
        var error = await Assert.ThrowsAsync<NotSupportedException>(() => host.StartAsync(Ct));
        Assert.Contains("ordering", error.Message, StringComparison.OrdinalIgnoreCase);
        DeclaredUnsupported();
        return false;
    }
}
