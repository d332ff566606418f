using System.Collections.Concurrent;
using Messaging.Tests.Infrastructure;
using Messaging.Transport;

namespace Messaging.Tests.Pipeline;

/// <summary>Ordered subscriptions: one lane per ordering key, in arrival order; different keys run side by side.</summary>
public sealed class OrderingTests
{
    [Fact]
    public async Task Messages_of_one_key_run_one_at_a_time_in_arrival_order_while_other_keys_run_in_parallel()
    {
        var gates = new HandlerGates();
        var lanes = new LaneMonitor();
        await using var harness = await PipelineHarness.StartAsync(
            PipelineHarness.Subscription(concurrency: 4, prefetch: 20, ordered: true),
            async (delivery, ct) =>
            {
                var message = (FakeMessage)delivery;
                lanes.Enter(message);
                try
                {
                    await gates.EnterAsync(message.Id, ct);
                }
                finally
                {
                    lanes.Exit(message);
                }
                await delivery.CompleteAsync(ct);
            });
        var arrivals = new List<FakeMessage>();
        for (var i = 0; i < 3; i++)
        {
            foreach (var key in new[] { "A", "B", "C" })
            {
                arrivals.Add(harness.Submit($"{key}{i}", key));
            }
        }
        arrivals.Add(harness.Submit("D0", "D")); // arrives after A1, B1, ... and still gets the free fourth slot

        await gates.WaitUntilStartedAsync("D0");
        Assert.Equal(["A0", "B0", "C0", "D0"], gates.Started);

        gates.Open("A0");
        await gates.WaitUntilStartedAsync("A1");
        Assert.Equal(["A0", "B0", "C0", "D0", "A1"], gates.Started);

        foreach (var message in arrivals)
        {
            gates.Open(message.Id);
        }
        await Wait.ForAsync(Task.WhenAll(arrivals.Select(m => m.FirstSettlementCall)), "every message to be settled");
        await harness.StopAsync();

        Assert.Empty(lanes.Violations);
        foreach (var key in new[] { "A", "B", "C" })
        {
            Assert.Equal(arrivals.Where(m => m.Id.StartsWith(key, StringComparison.Ordinal)).Select(m => m.Id), lanes.StartOrder(key));
        }
        Assert.All(arrivals, m => Assert.Equal(1, m.CompleteCalls));
        Assert.All(arrivals, m => Assert.Equal(1, m.SettlementCalls));
    }

    [Fact]
    public async Task Random_ordered_runs_keep_every_key_in_order_and_within_the_concurrency()
    {
        var seeds = new Random(1_337);
        for (var run = 0; run < 300; run++)
        {
            var seed = seeds.Next();
            var random = new Random(seed);
            var subscription = PipelineHarness.Subscription(concurrency: random.Next(1, 7), prefetch: random.Next(0, 6), ordered: true);
            var keys = random.Next(1, 5);
            var lanes = new LaneMonitor();
            var gauge = new ConcurrencyGauge();
            var yields = new ConcurrentDictionary<string, int>();
            await using var harness = await PipelineHarness.StartAsync(subscription, async (delivery, ct) =>
            {
                var message = (FakeMessage)delivery;
                gauge.Enter();
                lanes.Enter(message);
                try
                {
                    for (var i = 0; i < yields[message.Id]; i++)
                    {
                        await Task.Yield();
                    }
                }
                finally
                {
                    lanes.Exit(message);
                    gauge.Exit();
                }
                await delivery.CompleteAsync(ct);
            });
            var arrivals = new List<FakeMessage>();
            for (var i = 0; i < 30; i++)
            {
                // One message in six has no ordering key: it takes no lane.
                var key = random.Next(6) == 0 ? null : $"k{random.Next(keys)}";
                var message = harness.NewMessage($"m{i}", key);
                yields[message.Id] = random.Next(3);
                arrivals.Add(message);
                harness.Pipeline.Submit(message);
            }

            var context = $"seed {seed} (concurrency {subscription.Concurrency}, {keys} keys)";
            await Wait.ForAsync(Task.WhenAll(arrivals.Select(m => m.FirstSettlementCall)), $"every message to be settled, {context}");
            await harness.StopAsync();

            Assert.True(lanes.Violations.IsEmpty, $"{string.Join("; ", lanes.Violations)}, {context}");
            Assert.True(gauge.Max <= subscription.Concurrency, $"{gauge.Max} handlers ran at once, {context}");
            foreach (var key in arrivals.Select(m => m.Key).OfType<string>().Distinct())
            {
                Assert.Equal(arrivals.Where(m => m.Key == key).Select(m => m.Id), lanes.StartOrder(key));
            }
            Assert.All(arrivals, m => Assert.Equal(1, m.CompleteCalls));
            Assert.All(arrivals, m => Assert.Equal(1, m.SettlementCalls));
        }
    }

    [Fact]
    public async Task A_retried_message_has_the_rest_of_its_key_returned_while_other_keys_go_on()
    {
        var gates = new HandlerGates();
        await using var harness = await PipelineHarness.StartAsync(
            PipelineHarness.Subscription(concurrency: 2, prefetch: 10, ordered: true),
            async (delivery, ct) =>
            {
                await gates.EnterAsync(delivery.MessageId!, ct);
                if (delivery.MessageId == "A1")
                {
                    await delivery.RetryAsync(TimeSpan.FromSeconds(1), ct);
                    return;
                }
                await delivery.CompleteAsync(ct);
            });
        foreach (var id in new[] { "A2", "A3", "B1", "B2", "A4" })
        {
            gates.Open(id);
        }
        var retried = harness.Submit("A1", "A");
        var sameKey = new[] { harness.Submit("A2", "A"), harness.Submit("A3", "A") };
        var otherKey = new[] { harness.Submit("B1", "B"), harness.Submit("B2", "B") };

        await Wait.ForAsync(Task.WhenAll(otherKey.Select(m => m.FirstSettlementCall)), "the other key's messages to be handled");
        Assert.False(gates.HasStarted("A2"), "A2 started while A1 of the same key was running");

        gates.Open("A1");
        await Wait.UntilAsync(() => sameKey.All(m => m.ReturnCalls == 1), "the rest of A's backlog was returned");
        var later = harness.Submit("A4", "A");
        await Wait.ForAsync(later.FirstSettlementCall, "a later message of the key to be handled");
        await harness.StopAsync();

        Assert.Equal(1, retried.RetryCalls);
        Assert.Equal(1, retried.SettlementCalls);
        Assert.All(sameKey, m => Assert.Equal(1, m.SettlementCalls));
        Assert.All(otherKey, m => Assert.Equal(1, m.CompleteCalls));
        Assert.Equal(1, later.CompleteCalls);
        Assert.DoesNotContain("A2", gates.Started);
        Assert.DoesNotContain("A3", gates.Started);
    }

    [Fact]
    public async Task An_abort_gives_back_a_key_in_arrival_order_waiting_for_the_head_its_own_handler_gives_back()
    {
        var answer = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var harness = await PipelineHarness.StartAsync(
            PipelineHarness.Subscription(concurrency: 2, prefetch: 10, ordered: true),
            async (delivery, _) =>
            {
                // As a held retry does when the consumer stops: it gives its message back itself.
                await Task.Delay(Timeout.Infinite, delivery.StopRequested).ContinueWith(static _ => { }, TaskScheduler.Default);
                await delivery.GiveBackAsync();
            });
        var head = harness.Submit(new FakeMessage("A1", "A", harness.Log) { ReturnAnswer = answer.Task });
        var later = harness.Submit("A2", "A");
        var last = harness.Submit("A3", "A");
        using var deadline = new CancellationTokenSource();

        // A graceful stop: the handler gives A1 back (the broker has not answered yet); A2 and A3 wait behind it.
        var stopping = harness.Pipeline.StopAsync(deadline.Token);
        await Wait.UntilAsync(() => head.ReturnCalls == 1, "the head's handler to give it back");
        // The stop runs out of time: the abort takes A2 and A3 while A1's return is still unanswered.
        await deadline.CancelAsync();
        try
        {
            // Bounded observation: the abort must not give A2 back before A1's return is answered.
            await Wait.UntilAsync(() => later.ReturnCalls > 0, "A2 to be given back early", TimeSpan.FromSeconds(2));
        }
        catch (TimeoutException)
        {
            // Expected: it waits for A1.
        }
        answer.SetResult();
        await Wait.ForAsync(stopping, "the stop that became an abort");
        await Wait.UntilAsync(() => last.ReturnCalls == 1, "the rest of the key to be given back");

        // A broker may deliver them again in the order they came back: never A2 before A1's return was answered.
        Assert.True(harness.Log.PositionOf("returned:A1") < harness.Log.PositionOf("return:A2"), string.Join(", ", harness.Log.Entries));
        Assert.True(harness.Log.PositionOf("return:A2") < harness.Log.PositionOf("return:A3"), string.Join(", ", harness.Log.Entries));
        Assert.Equal(1, later.ReturnCalls);
    }

    [Fact]
    public async Task The_messages_of_one_receive_take_their_lanes_before_any_starts()
    {
        var handled = new ConcurrentQueue<string>();
        await using var harness = await PipelineHarness.StartAsync(
            PipelineHarness.Subscription(concurrency: 4, prefetch: 10, ordered: true),
            async (delivery, ct) =>
            {
                handled.Enqueue(delivery.MessageId!);
                await delivery.RetryAsync(TimeSpan.FromSeconds(1), ct); // settles at once, on the submitting thread
            });
        // An SQS FIFO receive: two messages of one group; the broker's retry of the first keeps the group's order.
        var first = new FakeMessage("A1", "A", harness.Log) { BrokerRetryKeepsKeyOrder = true };
        var second = new FakeMessage("A2", "A", harness.Log) { BrokerRetryKeepsKeyOrder = true };

        harness.Pipeline.SubmitAll([first, second]);

        await Wait.UntilAsync(() => second.ReturnCalls == 1, "A2 to go back behind A1's retry");
        Assert.Equal(["A1"], handled.ToArray());
        Assert.Equal(1, first.RetryCalls);
    }

    [Fact]
    public async Task A_message_that_arrives_during_an_abort_goes_back_after_the_earlier_messages_of_its_key()
    {
        var slowBroker = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var harness = await KeyAWithASlowReturnAsync(slowBroker.Task);

        var abort = harness.Pipeline.AbortAsync();
        // A pull stream's response was still being handed over when the abort began.
        var late = harness.Submit("A3", "A");
        try
        {
            await Wait.UntilAsync(() => harness.Log.Contains("return:A2"), "the abort to give A2 back");
            Assert.False(harness.Log.Contains("return:A3"), $"A3 went back while A2 was still going back: {harness.Log}");
        }
        finally
        {
            slowBroker.TrySetResult();
        }

        await Wait.ForAsync(abort, "the abort");
        await Wait.UntilAsync(() => late.ReturnCalls == 1, "A3 to go back");
        Assert.True(harness.Log.PositionOf("return:A1") < harness.Log.PositionOf("return:A2"), harness.Log.ToString());
        Assert.True(harness.Log.PositionOf("returned:A2") < harness.Log.PositionOf("return:A3"), harness.Log.ToString());
    }

    [Fact]
    public async Task A_message_without_a_key_that_arrives_during_an_abort_goes_back_at_once()
    {
        var slowBroker = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var harness = await KeyAWithASlowReturnAsync(slowBroker.Task);

        var abort = harness.Pipeline.AbortAsync();
        try
        {
            // The abort has taken what it gives back, and waits for A2's answer.
            await Wait.UntilAsync(() => harness.Log.Contains("return:A2"), "the abort to give A2 back");
            var late = harness.Submit("B1");
            // It has no order to keep: it goes back at once, not behind the key that is still going back (which would hold
            // it until the pipeline's 10 s bound on an unanswered return).
            await Wait.UntilAsync(() => late.ReturnCalls == 1, "B1 to go back while A2 is still going back", TimeSpan.FromSeconds(5));
        }
        finally
        {
            slowBroker.TrySetResult();
        }
        await Wait.ForAsync(abort, "the abort");
    }

    [Fact]
    public async Task Where_the_receiver_returns_together_an_abort_gives_each_key_back_in_one_call_its_running_message_first()
    {
        var started = new ConcurrentDictionary<string, byte>();
        await using var harness = await PipelineHarness.StartAsync(
            PipelineHarness.Subscription(concurrency: 3, prefetch: 10, ordered: true),
            UntilCancelled(delivery => started[delivery.MessageId!] = 0),
            returnsTogether: true);
        var messages = new[]
        {
            harness.Submit("A1", "A"), harness.Submit("B1", "B"), harness.Submit("A2", "A"), harness.Submit("C1"),
            harness.Submit("A3", "A"), harness.Submit("B2", "B"),
        };
        await Wait.UntilAsync(() => started.ContainsKey("A1") && started.ContainsKey("B1") && started.ContainsKey("C1"), "A1, B1 and C1 to start");

        await Wait.ForAsync(harness.Pipeline.AbortAsync(), "the abort");

        // A broker that goes on with a key once some of its messages are back must get the whole key back at once: the running
        // head in the same call as the rest, not by its runner one call ahead of them.
        Assert.Contains("return-together:A1,A2,A3", harness.Log.Entries);
        Assert.Contains("return-together:B1,B2", harness.Log.Entries);
        // No key, no order to keep: it goes back on its own, as on any receiver.
        Assert.Contains("return:C1", harness.Log.Entries);
        Assert.All(messages, m => Assert.Equal(1, m.SettlementCalls));
    }

    [Fact]
    public async Task Where_the_receiver_returns_together_an_abort_does_not_wait_for_a_renewal_the_broker_does_not_answer()
    {
        // A renewal round is bounded by two intervals: a minute here, far beyond the abort's wait below.
        var clock = new RenewalClock(TimeSpan.FromSeconds(30));
        var headStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var renewalSent = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var harness = await PipelineHarness.StartAsync(
            PipelineHarness.Subscription(concurrency: 1, prefetch: 10, ordered: true),
            UntilCancelled(_ => headStarted.TrySetResult()),
            leaseRenewalInterval: clock.Interval,
            time: clock,
            returnsTogether: true);
        // The broker has become unreachable: a renewal call ends only when its token fires.
        harness.Receiver.RenewAnswer = ct =>
        {
            renewalSent.TrySetResult();
            return Task.Delay(Timeout.InfiniteTimeSpan, ct);
        };
        var messages = new[] { harness.Submit("A1", "A"), harness.Submit("A2", "A") };
        await Wait.ForAsync(headStarted.Task, "A1 to start");
        await clock.StartRoundAsync();
        await Wait.ForAsync(renewalSent.Task, "a renewal of A1 and A2 to be sent");

        await Wait.ForAsync(harness.Pipeline.AbortAsync(), "the abort, while the renewal is unanswered", TimeSpan.FromSeconds(5));

        Assert.Contains("return-together:A1,A2", harness.Log.Entries);
        Assert.All(messages, m => Assert.Equal(1, m.SettlementCalls));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task An_abort_gives_back_the_rest_of_a_key_only_after_its_running_message_whose_acknowledgement_then_fails(bool returnsTogether)
    {
        var brokerAnswer = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var harness = await PipelineHarness.StartAsync(
            PipelineHarness.Subscription(concurrency: 1, prefetch: 10, ordered: true),
            (delivery, ct) => delivery.CompleteAsync(ct),
            returnsTogether: returnsTogether);
        var head = harness.Submit(new FakeMessage("A1", "A", harness.Log)
        {
            CompleteAnswer = brokerAnswer.Task,
            CompleteFailure = new InvalidOperationException("the broker refused the acknowledgement"),
        });
        var rest = new[] { harness.Submit("A2", "A"), harness.Submit("A3", "A") };
        await Wait.UntilAsync(() => harness.Log.Contains("complete:A1"), "A1's acknowledgement to be sent");

        var abort = harness.Pipeline.AbortAsync();
        try
        {
            // Bounded observation: while A1's acknowledgement may still fail, A2 must not go back.
            await Wait.UntilAsync(() => rest[0].ReturnCalls > 0, "A2 to be given back early", TimeSpan.FromSeconds(1));
        }
        catch (TimeoutException)
        {
            // Expected: it waits for A1's settlement.
        }
        brokerAnswer.SetResult(); // the acknowledgement fails: A1 goes back, unsettled
        await Wait.ForAsync(abort, "the abort");
        await Wait.UntilAsync(() => rest.All(m => m.ReturnCalls == 1), "the rest of the key to be given back");

        var restReturned = returnsTogether ? "return-together:A2,A3" : "return:A2";
        Assert.True(harness.Log.PositionOf("return:A1") < harness.Log.PositionOf(restReturned), harness.Log.ToString());
        Assert.Equal(1, head.ReturnCalls);
    }

    [Fact]
    public async Task Where_the_receiver_returns_together_the_rest_of_a_retried_key_goes_back_in_one_call()
    {
        var gates = new HandlerGates();
        await using var harness = await PipelineHarness.StartAsync(
            PipelineHarness.Subscription(concurrency: 2, prefetch: 10, ordered: true),
            async (delivery, ct) =>
            {
                await gates.EnterAsync(delivery.MessageId!, ct);
                await delivery.RetryAsync(TimeSpan.FromSeconds(1), ct);
            },
            returnsTogether: true);
        var retried = harness.Submit("A1", "A");
        var rest = new[] { harness.Submit("A2", "A"), harness.Submit("A3", "A"), harness.Submit("A4", "A") };

        gates.Open("A1");
        await Wait.UntilAsync(() => rest.All(m => m.ReturnCalls == 1), "the rest of A's backlog to be returned");

        Assert.Equal(1, retried.RetryCalls);
        Assert.True(harness.Log.PositionOf("retry:A1") < harness.Log.PositionOf("return-together:A2,A3,A4"), harness.Log.ToString());
        Assert.All(rest, m => Assert.Equal(1, m.SettlementCalls));
        await harness.StopAsync();
    }

    /// <summary>A handler that says it started, then gives up unsettled only when cancelled (as by an abort).</summary>
    private static DeliveryCallback UntilCancelled(Action<ITransportDelivery> started) => async (delivery, ct) =>
    {
        started(delivery);
        try
        {
            await Task.Delay(Timeout.InfiniteTimeSpan, ct);
        }
        catch (OperationCanceledException)
        {
            // Gives up unsettled when the abort cancels it.
        }
    };

    /// <summary>
    /// An ordered pipeline running A1 (a handler that gives up only when cancelled) with A2 of the same key waiting behind
    /// it, whose return the broker answers only when <paramref name="a2ReturnAnswer"/> completes.
    /// </summary>
    private static async Task<PipelineHarness> KeyAWithASlowReturnAsync(Task a2ReturnAnswer)
    {
        var headStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var harness = await PipelineHarness.StartAsync(
            PipelineHarness.Subscription(concurrency: 1, prefetch: 10, ordered: true),
            UntilCancelled(_ => headStarted.TrySetResult()));
        harness.Submit("A1", "A");
        harness.Submit(new FakeMessage("A2", "A", harness.Log) { ReturnAnswer = a2ReturnAnswer });
        await Wait.ForAsync(headStarted.Task, "A1 to start");
        return harness;
    }

    /// <summary>Records, per ordering key, the order handlers started in and any moment two of them ran at once.</summary>
    private sealed class LaneMonitor
    {
        private readonly ConcurrentDictionary<string, int> _running = new();
        private readonly ConcurrentDictionary<string, ConcurrentQueue<string>> _starts = new();

        public ConcurrentQueue<string> Violations { get; } = new();

        public void Enter(FakeMessage message)
        {
            if (message.Key is not { } key)
            {
                return;
            }
            _starts.GetOrAdd(key, _ => new()).Enqueue(message.Id);
            if (_running.AddOrUpdate(key, 1, (_, n) => n + 1) > 1)
            {
                Violations.Enqueue($"{message.Id} started while another message of key {key} was running");
            }
        }

        public void Exit(FakeMessage message)
        {
            if (message.Key is { } key)
            {
                _running.AddOrUpdate(key, 0, (_, n) => n - 1);
            }
        }

        public IReadOnlyList<string> StartOrder(string key) => _starts.TryGetValue(key, out var starts) ? [.. starts] : [];
    }
}
