using System.Collections.Concurrent;
using System.Diagnostics;
using CloudNative.CloudEvents;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.ConformanceTests.Transports;
using Messaging.DeadLetters;
using Messaging.PubSub;
using Messaging.PubSub.Grpc;
using Messaging.Topology;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Messaging.ConformanceTests.PubSub;

/// <summary>
/// Faults of a production Pub/Sub, caused on the emulator through its admin REST API (resources deleted behind the
/// transport's back), and the publisher's queue under cancellation and back-pressure.
/// </summary>
public sealed class PubSubFaultTests(PubSubFixture fixture) : IClassFixture<PubSubFixture>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private void RequireEmulator()
    {
        if (fixture.UnavailableReason is { } reason)
        {
            Assert.SkipWhen(Environment.GetEnvironmentVariable("MESSAGING_CONFORMANCE_REQUIRE") is null, reason);
            Assert.Fail(reason);
        }
    }

    private static (string Topic, string Subscription) NewNames(string label)
    {
        var topic = $"ct-{label}-{Guid.NewGuid().ToString("N")[..8]}";
        return (topic, topic + "-sub");
    }

    private static CloudEvent Event(string? orderingKey = null)
    {
        var cloudEvent = new CloudEvent
        {
            Id = Guid.NewGuid().ToString(),
            Source = new Uri("urn:test"),
            Type = "com.example.fault",
            DataContentType = "text/plain",
            Data = "x"u8.ToArray(),
        };
        if (orderingKey is not null)
        {
            cloudEvent[PubSubCodec.PartitionKeyAttribute] = orderingKey;
        }
        return cloudEvent;
    }

    private static MessagingTopology Topology(string topic, string subscription) =>
        new([topic], [new SubscriptionDefinition { Name = subscription, Topic = topic }]);

    private PubSubTransportOptions Options(Action<PubSubTransportOptions>? configure = null)
    {
        var options = new PubSubTransportOptions { ProjectId = fixture.Project, EmulatorHost = fixture.Host };
        configure?.Invoke(options);
        return options;
    }

    /// <summary>
    /// The CloudEvent ids the subscription delivers (pulled and acknowledged): pulls until every id in
    /// <paramref name="expected"/> has come (for up to 30 s: a loaded emulator may answer a pull with nothing while messages
    /// exist), then keeps pulling, each pull waiting up to 2 s, until one brings nothing, to catch any event beyond them.
    /// </summary>
    private static async Task<List<string>> PullIdsAsync(PubSubTransport transport, string subscription, IReadOnlyCollection<string> expected)
    {
        var resource = transport.Names.Subscription(subscription);
        var ids = new List<string>();
        var watch = Stopwatch.StartNew();
        while (!expected.All(ids.Contains) && watch.Elapsed < TimeSpan.FromSeconds(30))
        {
            ids.AddRange(await PullOnceAsync(transport, resource, TimeSpan.FromSeconds(5)));
        }
        Assert.True(expected.All(ids.Contains), $"Pulled {ids.Count} event(s) in 30 s, without {string.Join(", ", expected.Where(e => !ids.Contains(e)))}.");
        while (await PullOnceAsync(transport, resource, TimeSpan.FromSeconds(2)) is { Count: > 0 } extra)
        {
            ids.AddRange(extra);
        }
        return ids;
    }

    /// <summary>One waiting pull: the ids it brought (acknowledged), or none when <paramref name="wait"/> passed first.</summary>
    private static async Task<List<string>> PullOnceAsync(PubSubTransport transport, string resource, TimeSpan wait)
    {
        PullResponse response;
        try
        {
            response = await transport.Connection.Subscriber.PullAsync(
                new PullRequest { Subscription = resource, MaxMessages = 100, ReturnImmediately = false },
                PubSubConnection.Call(Ct, wait)).ResponseAsync;
        }
        catch (Grpc.Core.RpcException ex) when (ex.StatusCode == Grpc.Core.StatusCode.DeadlineExceeded)
        {
            return [];
        }
        if (response.ReceivedMessages.Count > 0)
        {
            var ack = new AcknowledgeRequest { Subscription = resource };
            ack.AckIds.AddRange(response.ReceivedMessages.Select(m => m.AckId));
            await transport.Connection.Subscriber.AcknowledgeAsync(ack, cancellationToken: Ct);
        }
        return response.ReceivedMessages.Select(m => m.Message.Attributes.TryGetValue("ce-id", out var id) ? id : "?").ToList();
    }

    /// <summary>
    /// The real clock, except that the timers the transport creates (the publisher's <see cref="PubSubTransportOptions.MaxBatchDelay"/>)
    /// fire only when the test fires them: a request that waits for more events is still waiting when the test looks,
    /// however slow the machine.
    /// </summary>
    private sealed class HeldTimers : TimeProvider
    {
        private readonly ConcurrentQueue<HeldTimer> _timers = new();

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = new HeldTimer(callback, state);
            _timers.Enqueue(timer);
            return timer;
        }

        /// <summary>Waits (up to 30 s) for a timer that has not fired and is still in use, and fires it: one batch delay ends.</summary>
        public async Task FireNextAsync()
        {
            var watch = Stopwatch.StartNew();
            while (true)
            {
                foreach (var timer in _timers)
                {
                    if (timer.TryFire())
                    {
                        return;
                    }
                }
                Assert.True(watch.Elapsed < TimeSpan.FromSeconds(30), "no batch delay started within 30 s");
                await Task.Delay(20, Ct);
            }
        }

        /// <summary>Ends every batch delay, as they start, until <paramref name="task"/> has completed (for up to 30 s).</summary>
        public async Task FireUntilAsync(Task task)
        {
            var watch = Stopwatch.StartNew();
            while (!task.IsCompleted)
            {
                foreach (var timer in _timers)
                {
                    timer.TryFire();
                }
                Assert.True(watch.Elapsed < TimeSpan.FromSeconds(30), "the publish did not complete within 30 s of its batch delays ending");
                await Task.WhenAny(task, Task.Delay(20, Ct));
            }
            await task;
        }

        private sealed class HeldTimer(TimerCallback callback, object? state) : ITimer
        {
            private int _done;

            public bool TryFire()
            {
                if (Interlocked.Exchange(ref _done, 1) != 0)
                {
                    return false;
                }
                callback(state);
                return true;
            }

            public bool Change(TimeSpan dueTime, TimeSpan period) => Volatile.Read(ref _done) == 0;

            public void Dispose() => Interlocked.Exchange(ref _done, 1);

            public ValueTask DisposeAsync()
            {
                Dispose();
                return ValueTask.CompletedTask;
            }
        }
    }

    private static Task<Subscription> GetSubscriptionAsync(PubSubTransport transport, string subscription) =>
        transport.Connection.Subscriber.GetSubscriptionAsync(
            new GetSubscriptionRequest { Subscription = transport.Names.Subscription(subscription) }, cancellationToken: Ct).ResponseAsync;

    // ---- dead letters ------------------------------------------------------------------------------------

    [Fact(Timeout = 120_000)]
    public async Task A_rejected_event_goes_back_while_the_dead_letter_subscription_is_missing_and_is_dead_lettered_once_it_is_back()
    {
        RequireEmulator();
        var (topic, subscription) = NewNames("dlmiss");
        var deadLetterSubscription = PubSubNames.DeadLetter(subscription);
        var logs = new CapturingLoggerFactory();
        var probe = new Probe
        {
            Behaviour = (context, _) =>
            {
                context.Reject("rejected by the test");
                return Task.CompletedTask;
            },
        };
        try
        {
            await using var host = await ConformanceHost.StartAsync(fixture, probe,
                m => m.AddSubscription(subscription, topic, s => s.HandleCloudEvents<ProbeHandler>()),
                services: s => s.AddSingleton<ILoggerProvider>(logs));

            // Someone deletes the dead-letter subscription: its topic then keeps nothing published to it.
            await fixture.AdminDeleteAsync("subscriptions/" + deadLetterSubscription, Ct);
            var rejected = Event();
            await host.Publisher.PublishAsync(topic, rejected, Ct);

            // The dead letter is not published to nowhere and the original is not acknowledged: the settlement fails with
            // an error naming the missing subscription and the setting, and the message goes back to the subscription.
            await Wait.UntilAsync(
                () => logs.Errors.Any(e => e.Contains(deadLetterSubscription, StringComparison.Ordinal) && e.Contains("Messaging:Provisioning", StringComparison.Ordinal)),
                "an error names the missing dead-letter subscription and Messaging:Provisioning");

            // Once the subscription is provisioned again, the event comes back and ends up among the dead letters.
            await host.Transport.ProvisionAsync(Topology(topic, subscription), Ct);
            var letters = await Wait.UntilAsync(() => host.DeadLetters.PeekAsync(subscription, 100, Ct), d => d.Any(l => l.Event?.Id == rejected.Id),
                "the rejected event is in the dead-letter store", TimeSpan.FromSeconds(60));
            Assert.Equal(DeadLetterReason.Rejected, letters.First(l => l.Event?.Id == rejected.Id).Metadata.Reason);
            Assert.True(probe.AttemptsOf(rejected.Id!).Count() >= 2, "the event was delivered again after the failed dead-letter settlement");
        }
        finally
        {
            await fixture.DeleteSubscriptionAsync(topic, subscription);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_consumer_without_provisioning_warns_at_start_up_when_its_dead_letter_subscription_is_missing()
    {
        RequireEmulator();
        var (topic, subscription) = NewNames("dlwarn");
        var deadLetterSubscription = PubSubNames.DeadLetter(subscription);
        var logs = new CapturingLoggerFactory();
        try
        {
            // Provisioned elsewhere, without the dead-letter subscription.
            await using (var transport = new PubSubTransport(Options(), []))
            {
                await transport.ProvisionAsync(Topology(topic, subscription), Ct);
            }
            await fixture.AdminDeleteAsync("subscriptions/" + deadLetterSubscription, Ct);
            await using var host = await ConformanceHost.StartAsync(fixture, new Probe(),
                m => m.AddSubscription(subscription, topic, s => s.HandleCloudEvents<ProbeHandler>()),
                services: s => s.AddSingleton<ILoggerProvider>(logs),
                settings: new Dictionary<string, string?> { ["Messaging:Provisioning"] = "false" });
            Assert.Contains(logs.Warnings, w => w.Contains(deadLetterSubscription, StringComparison.Ordinal) && w.Contains("Messaging:Provisioning", StringComparison.Ordinal));
        }
        finally
        {
            await fixture.DeleteSubscriptionAsync(topic, subscription);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task The_dead_letter_subscription_keeps_messages_for_DeadLetterRetention_and_never_expires()
    {
        RequireEmulator();
        var (topic, subscription) = NewNames("dlkeep");
        var logs = new CapturingLoggerFactory();
        await using var transport = new PubSubTransport(Options(o => o.DeadLetterRetention = TimeSpan.FromDays(1)), [], new Logger<PubSubTransport>(logs));
        try
        {
            await transport.ProvisionAsync(Topology(topic, subscription), Ct);
            // Provisioning again finds everything as wanted: no warning (protobuf messages compare by value only through Equals).
            await transport.ProvisionAsync(Topology(topic, subscription), Ct);
            Assert.DoesNotContain(logs.Warnings, w => w.Contains("DeadLetterRetention", StringComparison.Ordinal));
            var deadLetter = await GetSubscriptionAsync(transport, PubSubNames.DeadLetter(subscription));
            Assert.Equal(TimeSpan.FromDays(1), deadLetter.MessageRetentionDuration?.ToTimeSpan());
            // An expiration policy without a TTL: Pub/Sub never deletes the subscription for being idle (its default is 31 days).
            Assert.NotNull(deadLetter.ExpirationPolicy);
            Assert.Null(deadLetter.ExpirationPolicy.Ttl);
        }
        finally
        {
            await fixture.DeleteSubscriptionAsync(topic, subscription);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task An_existing_dead_letter_subscription_with_another_retention_or_an_expiry_is_named_in_warnings()
    {
        RequireEmulator();
        var (topic, subscription) = NewNames("dlold");
        var deadLetter = PubSubNames.DeadLetter(subscription);
        var logs = new CapturingLoggerFactory();
        await using var transport = new PubSubTransport(Options(o => o.DeadLetterRetention = TimeSpan.FromDays(2)), [], new Logger<PubSubTransport>(logs));
        try
        {
            // Created by hand, or by another tool, with Pub/Sub's defaults: 7 days' retention, expiry after 31 idle days.
            await fixture.AdminCreateAsync("topics/" + deadLetter, new { }, Ct);
            await fixture.AdminCreateAsync("subscriptions/" + deadLetter, new
            {
                topic = transport.Names.Topic(deadLetter),
                messageRetentionDuration = "604800s",
                expirationPolicy = new { ttl = "2678400s" },
            }, Ct);
            await transport.ProvisionAsync(Topology(topic, subscription), Ct);
            Assert.Contains(logs.Warnings, w => w.Contains(deadLetter, StringComparison.Ordinal) && w.Contains("Messaging:PubSub:DeadLetterRetention", StringComparison.Ordinal));
            Assert.Contains(logs.Warnings, w => w.Contains(deadLetter, StringComparison.Ordinal) && w.Contains("expire", StringComparison.Ordinal));
        }
        finally
        {
            await fixture.DeleteSubscriptionAsync(topic, subscription);
        }
    }

    [Fact]
    public void DeadLetterRetention_defaults_to_the_Pub_Sub_maximum_and_is_validated_by_its_name()
    {
        Assert.Equal(TimeSpan.FromSeconds(604_800), new PubSubTransportOptions().DeadLetterRetention);
        Assert.Empty(PubSubOptionsValidator.Problems(new PubSubTransportOptions { ProjectId = "p" }));
        foreach (var retention in new[] { TimeSpan.FromMinutes(10), TimeSpan.FromDays(7) })
        {
            Assert.Empty(PubSubOptionsValidator.Problems(new PubSubTransportOptions { ProjectId = "p", DeadLetterRetention = retention }));
        }
        foreach (var retention in new[] { TimeSpan.Zero, TimeSpan.FromMinutes(9), TimeSpan.FromDays(7) + TimeSpan.FromSeconds(1) })
        {
            var problem = Assert.Single(PubSubOptionsValidator.Problems(new PubSubTransportOptions { ProjectId = "p", DeadLetterRetention = retention }));
            Assert.StartsWith("Messaging:PubSub:DeadLetterRetention", problem, StringComparison.Ordinal);
        }
    }

    // ---- the publish queue -------------------------------------------------------------------------------

    [Fact(Timeout = 60_000)]
    public async Task A_publish_cancelled_while_queued_throws_at_once_and_its_event_is_never_sent()
    {
        RequireEmulator();
        var (topic, subscription) = NewNames("pubcancel");
        // Each request waits up to 10 s for more events, on a clock the test holds, so the first publish is still queued when
        // it is cancelled.
        var clock = new HeldTimers();
        await using var transport = new PubSubTransport(Options(o => o.MaxBatchDelay = TimeSpan.FromSeconds(10)), [], time: clock);
        try
        {
            await transport.ProvisionAsync(Topology(topic, subscription), Ct);
            var cancelled = Event();
            var kept = Event();
            using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct);
            var first = transport.PublishAsync(topic, [cancelled], cancel.Token);
            var second = transport.PublishAsync(topic, [kept], Ct);
            await cancel.CancelAsync();
            // Bounded, since the held request would never go: a cancelled publish that waited for it fails here.
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => first.WaitAsync(TimeSpan.FromSeconds(30), Ct));
            // The caller did not wait for the request: the other event, queued for the same request, is not sent yet.
            Assert.False(second.IsCompleted, "the cancelled publish waited for the request it was queued for");
            await clock.FireUntilAsync(second);
            var received = await PullIdsAsync(transport, subscription, [kept.Id!]);
            Assert.Contains(kept.Id, received);
            Assert.DoesNotContain(cancelled.Id, received);
        }
        finally
        {
            await fixture.DeleteSubscriptionAsync(topic, subscription);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_full_publish_queue_makes_publish_wait_for_room_and_a_waiting_publish_can_be_cancelled()
    {
        RequireEmulator();
        var (topic, subscription) = NewNames("pubbound");
        // Room for two events per topic; each request waits up to 10 s for more, on a clock the test holds, so the first two
        // hold the room meanwhile.
        var clock = new HeldTimers();
        await using var transport = new PubSubTransport(Options(o =>
        {
            o.MaxQueuedEvents = 2;
            o.MaxBatchDelay = TimeSpan.FromSeconds(10);
        }), [], time: clock);
        try
        {
            await transport.ProvisionAsync(Topology(topic, subscription), Ct);
            var (a, b, c, d) = (Event(), Event(), Event(), Event());
            var first = transport.PublishAsync(topic, [a, b], Ct);
            using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct);
            var waiting = transport.PublishAsync(topic, [c], cancel.Token);
            var later = transport.PublishAsync(topic, [d], Ct);
            Assert.False(waiting.IsCompleted);

            // Cancelled while it waits for room: it throws at once, before the first request is even sent.
            await cancel.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting.WaitAsync(TimeSpan.FromSeconds(30), Ct));
            Assert.False(first.IsCompleted, "the cancelled publish waited for the request ahead of it");

            // The queue was full, so the last event was not queued with the first two: it is sent only once they are answered.
            // Only the first request's delay ends here; the next request's is still held when the last event is looked at.
            await clock.FireNextAsync();
            await first;
            Assert.False(later.IsCompleted, "an event beyond MaxQueuedEvents went out in the request of the events ahead of it");
            await clock.FireUntilAsync(later);
            var received = await PullIdsAsync(transport, subscription, [a.Id!, b.Id!, d.Id!]);
            Assert.Equal(new[] { a.Id, b.Id, d.Id }.Order(), received.Order());
        }
        finally
        {
            await fixture.DeleteSubscriptionAsync(topic, subscription);
        }
    }

    [Fact]
    public void The_publish_queue_bounds_are_validated_by_their_names()
    {
        var defaults = new PubSubTransportOptions();
        Assert.Equal(10_000, defaults.MaxQueuedEvents);
        Assert.Equal(100L * 1024 * 1024, defaults.MaxQueuedBytes);
        var events = Assert.Single(PubSubOptionsValidator.Problems(new PubSubTransportOptions { ProjectId = "p", MaxQueuedEvents = 0 }));
        Assert.StartsWith("Messaging:PubSub:MaxQueuedEvents", events, StringComparison.Ordinal);
        var bytes = Assert.Single(PubSubOptionsValidator.Problems(new PubSubTransportOptions { ProjectId = "p", MaxQueuedBytes = 1023 }));
        Assert.StartsWith("Messaging:PubSub:MaxQueuedBytes", bytes, StringComparison.Ordinal);
    }

    // ---- ordering keys -----------------------------------------------------------------------------------

    [Fact(Timeout = 90_000)]
    public async Task After_a_failed_publish_of_an_ordering_key_its_later_events_are_refused_until_ResumePublish()
    {
        RequireEmulator();
        var (topic, subscription) = NewNames("pubkey");
        // One event per request, so that events of a key queued behind a failed request are requests of their own.
        await using var transport = new PubSubTransport(Options(o => o.MaxBatchCount = 1), []);
        try
        {
            await transport.ProvisionAsync(new MessagingTopology([topic], []), Ct);
            await transport.PublishAsync(topic, [Event("k1")], Ct);

            // The topic disappears (deleted behind the transport's back): the next request for k1 fails, and the events of
            // k1 queued behind it are refused unsent rather than sent after the gap.
            await fixture.AdminDeleteAsync("topics/" + topic, Ct);
            var burst = Enumerable.Range(0, 3).Select(_ => transport.PublishAsync(topic, [Event("k1")], Ct)).ToList();
            var failed = await Assert.ThrowsAsync<InvalidOperationException>(() => burst[0]);
            Assert.Contains("does not exist", failed.Message, StringComparison.Ordinal);
            foreach (var queued in burst.Skip(1))
            {
                Assert.IsType<OrderingKeyPausedException>(await Assert.ThrowsAnyAsync<Exception>(() => queued));
            }

            // The topic is back, but k1 stays paused: its later events would otherwise overtake the failed ones.
            await transport.ProvisionAsync(new MessagingTopology([topic], []), Ct);
            var paused = await Assert.ThrowsAsync<OrderingKeyPausedException>(() => transport.PublishAsync(topic, [Event("k1")], Ct));
            Assert.Equal("k1", paused.OrderingKey);
            Assert.Equal(topic, paused.Topic);
            Assert.Contains("ResumePublish", paused.Message, StringComparison.Ordinal);
            Assert.False(paused.IsTransient);
            Assert.False(transport.IsTransient(paused));

            // Other keys and events without a key are not held back.
            await transport.PublishAsync(topic, [Event("k2")], Ct);
            await transport.PublishAsync(topic, [Event()], Ct);

            // Once the application resumes the key, its events go out again.
            transport.ResumePublish(topic, "k1");
            await transport.PublishAsync(topic, [Event("k1"), Event("k1")], Ct);
        }
        finally
        {
            await fixture.DeleteSubscriptionAsync(topic, subscription);
        }
    }
}
