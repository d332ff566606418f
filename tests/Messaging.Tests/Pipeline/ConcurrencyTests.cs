using Messaging.Tests.Infrastructure;
using Messaging.Transport;

namespace Messaging.Tests.Pipeline;

/// <summary>
/// Seeded random runs: random concurrency, prefetch, way of feeding the pipeline, handler pauses and outcomes. Whatever
/// the interleaving, no more than <c>Concurrency</c> handlers run at once and every message gets exactly one settlement.
/// </summary>
public sealed class ConcurrencyTests
{
    private const int Runs = 2_000;
    private const int MessagesPerRun = 30;

    private enum Feed
    {
        /// <summary>A push transport that submits everything at once (Submit never blocks).</summary>
        PushBurst,

        /// <summary>A pull transport: reserves places, submits into some of them, gives the others back.</summary>
        Pull,
    }

    private enum Pause
    {
        None,
        Yield,
        Delay,
    }

    private enum Outcome
    {
        Complete,
        Retry,
        DeadLetter,
        SettleNothing,
    }

    private sealed record Plan(Pause Pause, Outcome Outcome);

    [Fact]
    public async Task Handlers_never_exceed_the_concurrency_and_every_message_is_settled_exactly_once()
    {
        var seeds = new Random(20_250_601);
        var runsThatOverlapped = 0;
        for (var run = 0; run < Runs; run++)
        {
            var maxConcurrent = await RunAsync(seeds.Next());
            if (maxConcurrent > 1)
            {
                runsThatOverlapped++;
            }
        }
        // Guards the guard: handlers really did run side by side, so a broken slot count would have shown.
        Assert.True(runsThatOverlapped > Runs / 4, $"only {runsThatOverlapped} of {Runs} runs had handlers overlapping");
    }

    private static async Task<int> RunAsync(int seed)
    {
        var random = new Random(seed);
        var subscription = PipelineHarness.Subscription(concurrency: random.Next(1, 9), prefetch: random.Next(0, 11));
        var feed = (Feed)random.Next(2);
        var plans = new Dictionary<string, Plan>(StringComparer.Ordinal);
        var messages = new List<FakeMessage>(MessagesPerRun);
        for (var i = 0; i < MessagesPerRun; i++)
        {
            var message = new FakeMessage($"m{i}");
            messages.Add(message);
            plans[message.Id] = new Plan(PickPause(random), PickOutcome(random));
        }
        var gauge = new ConcurrencyGauge();
        var context = $"seed {seed} (concurrency {subscription.Concurrency}, prefetch {subscription.Prefetch}, {feed})";

        await using var harness = await PipelineHarness.StartAsync(subscription, async (delivery, ct) =>
        {
            gauge.Enter();
            try
            {
                var plan = plans[delivery.MessageId!];
                switch (plan.Pause)
                {
                    case Pause.Yield:
                        await Task.Yield();
                        break;
                    case Pause.Delay:
                        await Task.Delay(1, ct);
                        break;
                }
                switch (plan.Outcome)
                {
                    case Outcome.Complete:
                        await delivery.CompleteAsync(ct);
                        break;
                    case Outcome.Retry:
                        await delivery.RetryAsync(TimeSpan.FromSeconds(1), ct);
                        break;
                    case Outcome.DeadLetter:
                        await delivery.DeadLetterAsync(Metadata.DeadLetter(), ct);
                        break;
                }
            }
            finally
            {
                gauge.Exit();
            }
        });
        var pipeline = harness.Pipeline;

        switch (feed)
        {
            case Feed.PushBurst:
                messages.ForEach(m => pipeline.Submit(m));
                break;
            case Feed.Pull:
                await PullAsync(pipeline, messages, random, context);
                break;
        }

        await Wait.ForAsync(Task.WhenAll(messages.Select(m => m.FirstSettlementCall)), $"every message to be settled, {context}");
        await harness.StopAsync();

        Assert.True(gauge.Max <= subscription.Concurrency, $"{gauge.Max} handlers ran at once, {context}");
        Assert.Equal(0, pipeline.HeldCount);
        foreach (var message in messages)
        {
            var expected = plans[message.Id].Outcome;
            var settledAsPlanned = expected switch
            {
                Outcome.Complete => message.CompleteCalls,
                Outcome.Retry => message.RetryCalls,
                Outcome.DeadLetter => message.DeadLetterCalls,
                _ => message.ReturnCalls,
            };
            Assert.True(settledAsPlanned == 1 && message.SettlementCalls == 1, $"{message} should be settled once by {expected}, {context}");
        }
        return gauge.Max;
    }

    private static async Task PullAsync(ReceivePipeline pipeline, List<FakeMessage> messages, Random random, string context)
    {
        var next = 0;
        while (next < messages.Count)
        {
            var asked = random.Next(1, 5);
            var reserved = await Wait.ForAsync(pipeline.ReserveAsync(asked, Wait.TestToken).AsTask(), $"a reservation, {context}");
            Assert.InRange(reserved, 1, asked);
            // Only this loop submits, and every message it submitted holds a place until the pipeline lets it go.
            Assert.True(reserved + pipeline.HeldCount <= pipeline.Capacity,
                $"{reserved} places reserved while {pipeline.HeldCount} messages are held, over the capacity {pipeline.Capacity}, {context}");
            var used = Math.Min(random.Next(0, reserved + 1), messages.Count - next);
            for (var i = 0; i < used; i++)
            {
                pipeline.Submit(messages[next++], reserved: true);
            }
            pipeline.CancelReservation(reserved - used);
        }
    }

    private static Pause PickPause(Random random) => random.Next(100) switch
    {
        < 30 => Pause.None,
        < 98 => Pause.Yield,
        _ => Pause.Delay,
    };

    private static Outcome PickOutcome(Random random) => random.Next(100) switch
    {
        < 85 => Outcome.Complete,
        < 91 => Outcome.Retry,
        < 96 => Outcome.DeadLetter,
        _ => Outcome.SettleNothing,
    };
}
