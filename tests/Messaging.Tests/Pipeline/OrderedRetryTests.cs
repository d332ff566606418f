using System.Collections.Concurrent;
using System.Text.Json;
using Messaging.DeadLetters;
using Messaging.Handling;
using Messaging.Policy;
using Messaging.Tests.Infrastructure;
using Messaging.Topology;
using Messaging.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace Messaging.Tests.Pipeline;

/// <summary>
/// Retries never reorder a key: on an ordered subscription a failing keyed event holds its key, in this process, through
/// its backoff, until it succeeds or is dead-lettered; other keys keep flowing; a stop gives the key back in order.
/// </summary>
public sealed class OrderedRetryTests : IAsyncDisposable
{
    private static readonly TimeSpan Backoff = TimeSpan.FromSeconds(5);
    private readonly FakeTimeProvider _time = new();
    private readonly ScriptedHandler _handler = new();
    private readonly ServiceProvider _services;

    public OrderedRetryTests()
    {
        _services = new ServiceCollection().AddSingleton(_handler).BuildServiceProvider();
    }

    public ValueTask DisposeAsync() => _services.DisposeAsync();

    private async Task<PipelineHarness> StartAsync(bool ordered = true, int maxAttempts = 3, StopBehavior stopBehavior = StopBehavior.ReturnUnstarted)
    {
        var subscription = PipelineHarness.Subscription(concurrency: 4, prefetch: 20, ordered: ordered) with
        {
            Retry = new RetryPolicy(maxAttempts, Policy.Backoff.Fixed(Backoff)),
        };
        var processor = new SubscriptionProcessor(
            subscription,
            [HandlerRegistration.Raw<ScriptedHandler>(eventType: null)],
            UnhandledEventAction.Complete,
            _services.GetRequiredService<IServiceScopeFactory>(),
            new JsonSerializerOptions(),
            NullLogger.Instance,
            "fake",
            _time);
        return await PipelineHarness.StartAsync(subscription, processor.HandleAsync, stopBehavior, time: _time);
    }

    /// <summary>Moves the clock past one backoff once the held retry waits on it.</summary>
    private async Task PassBackoffAsync(string id, int failedAttempts)
    {
        await Wait.UntilAsync(() => _handler.Attempts(id) == failedAttempts, $"{id} to have failed {failedAttempts} time(s)");
        await Wait.UntilAsync(() => _handler.Attempts(id) > failedAttempts || AdvanceIfWaiting(), $"{id} to be tried again");
    }

    private bool AdvanceIfWaiting()
    {
        _time.Advance(Backoff);
        return false;
    }

    [Fact]
    public async Task A_failing_event_holds_its_key_until_it_succeeds_while_other_keys_flow()
    {
        _handler.FailFirst("A1", 2);
        await using var harness = await StartAsync();
        var a1 = harness.Submit("A1", "A");
        var a2 = harness.Submit("A2", "A");
        var b1 = harness.Submit("B1", "B");

        await Wait.ForAsync(b1.FirstSettlementCall, "B1, another key, to be handled while A1 waits to retry");
        Assert.Equal(1, _handler.Attempts("A1"));
        Assert.Equal(0, _handler.Attempts("A2"));

        await PassBackoffAsync("A1", 1);
        await PassBackoffAsync("A1", 2);
        await Wait.ForAsync(a2.FirstSettlementCall, "A2 to be handled after A1");

        Assert.Equal(["A1@1", "A1@2", "A1@3", "A2@1"], _handler.History.Where(h => h.StartsWith('A')).ToArray());
        Assert.Equal(1, a1.CompleteCalls);
        Assert.Equal(0, a1.RetryCalls); // never given to the broker's retry, which would let A2 overtake it
        Assert.Equal(1, a2.CompleteCalls);
        Assert.Equal(1, b1.CompleteCalls);
    }

    [Fact]
    public async Task An_event_failing_every_attempt_is_dead_lettered_with_its_attempts_then_its_key_moves_on()
    {
        _handler.FailFirst("A1", int.MaxValue);
        await using var harness = await StartAsync(maxAttempts: 3);
        var a1 = harness.Submit("A1", "A");
        var a2 = harness.Submit("A2", "A");

        await PassBackoffAsync("A1", 1);
        await PassBackoffAsync("A1", 2);
        await Wait.ForAsync(a2.FirstSettlementCall, "A2 to be handled once A1 is dead-lettered");

        Assert.Equal(1, a1.DeadLetterCalls);
        Assert.Equal(DeadLetterReason.MaxAttemptsExceeded, a1.DeadLetterMetadata!.Reason);
        Assert.Equal(3, a1.DeadLetterMetadata.AttemptCount);
        Assert.Equal(1, a2.CompleteCalls);
        Assert.Equal(["A1@1", "A1@2", "A1@3", "A2@1"], _handler.History.ToArray());
    }

    [Fact]
    public async Task A_held_retry_continues_the_attempts_the_broker_counted()
    {
        _handler.FailFirst("A1", int.MaxValue);
        await using var harness = await StartAsync(maxAttempts: 3);
        var a1 = harness.Submit(new FakeMessage("A1", "A", harness.Log) { AttemptReader = () => 2 });

        await PassBackoffAsync("A1", 1);
        await Wait.ForAsync(a1.FirstSettlementCall, "A1 to be dead-lettered");

        Assert.Equal(["A1@2", "A1@3"], _handler.History.ToArray());
        Assert.Equal(3, a1.DeadLetterMetadata!.AttemptCount);
    }

    [Fact]
    public async Task A_stop_during_a_held_retry_gives_the_event_and_the_rest_of_its_key_back_unhandled()
    {
        _handler.FailFirst("A1", int.MaxValue);
        // Even a transport that handles what it received on a stop must not run A2 once A1 went back to the broker.
        await using var harness = await StartAsync(stopBehavior: StopBehavior.HandleReceived);
        var a1 = harness.Submit("A1", "A");
        var a2 = harness.Submit("A2", "A");
        await Wait.UntilAsync(() => _handler.Attempts("A1") == 1, "A1 to fail once");

        await harness.StopAsync();

        Assert.Equal(1, a1.ReturnCalls);
        Assert.Equal(1, a1.SettlementCalls);
        Assert.Equal(1, a2.ReturnCalls);
        Assert.Equal(1, a2.SettlementCalls);
        Assert.Equal(["A1@1"], _handler.History.ToArray());
    }

    [Fact]
    public async Task Without_an_ordering_key_or_on_an_unordered_subscription_the_broker_retries()
    {
        _handler.FailFirst("K1", 1);
        _handler.FailFirst("N1", 1);
        await using (var ordered = await StartAsync())
        {
            var keyless = ordered.Submit("N1");
            await Wait.ForAsync(keyless.FirstSettlementCall, "the keyless event to be settled");
            Assert.Equal(1, keyless.RetryCalls);
            Assert.Equal(Backoff, keyless.RetryDelay);
        }
        await using var unordered = await StartAsync(ordered: false);
        var keyed = unordered.Submit("K1", "A");
        await Wait.ForAsync(keyed.FirstSettlementCall, "the keyed event to be settled");
        Assert.Equal(1, keyed.RetryCalls);
    }

    [Fact]
    public async Task A_broker_that_keeps_key_order_on_retry_gets_the_retry_and_the_later_events_of_the_key_back()
    {
        _handler.FailFirst("A1", 1);
        await using var harness = await StartAsync();
        var gate = _handler.Gate("A1");
        var a1 = harness.Submit(new FakeMessage("A1", "A", harness.Log) { BrokerRetryKeepsKeyOrder = true });
        var a2 = harness.Submit(new FakeMessage("A2", "A", harness.Log) { BrokerRetryKeepsKeyOrder = true });
        gate.SetResult();

        await Wait.ForAsync(a2.FirstSettlementCall, "A2 to be given back behind A1's retry");

        Assert.Equal(1, a1.RetryCalls);
        Assert.Equal(1, a2.ReturnCalls);
        Assert.Equal(["A1@1"], _handler.History.ToArray());
    }

    /// <summary>Fails the first N attempts of chosen events; records "id@attempt" in the order attempts start.</summary>
    private sealed class ScriptedHandler : ICloudEventHandler
    {
        private readonly ConcurrentDictionary<string, int> _failures = new();
        private readonly ConcurrentDictionary<string, int> _attempts = new();
        private readonly ConcurrentDictionary<string, TaskCompletionSource> _gates = new();
        private readonly ConcurrentQueue<string> _history = new();

        public IReadOnlyList<string> History => [.. _history];

        public void FailFirst(string id, int attempts) => _failures[id] = attempts;

        public TaskCompletionSource Gate(string id) => _gates.GetOrAdd(id, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));

        public int Attempts(string id) => _attempts.GetValueOrDefault(id);

        public async Task HandleAsync(EventContext context, CancellationToken cancellationToken)
        {
            var id = context.Event.Id!;
            if (_gates.TryGetValue(id, out var gate))
            {
                await gate.Task.WaitAsync(cancellationToken);
            }
            _history.Enqueue($"{id}@{context.Attempt}");
            var failed = _attempts.AddOrUpdate(id, 1, (_, n) => n + 1);
            if (failed <= _failures.GetValueOrDefault(id))
            {
                throw new InvalidOperationException($"{id} fails attempt {context.Attempt}");
            }
        }
    }
}
