using Messaging.Tests.Infrastructure;
using Messaging.Transport;

namespace Messaging.Tests.Pipeline;

/// <summary>Each delivery is settled exactly once, whatever its handler path does.</summary>
public sealed class SettlementTests
{
    public enum Settlement
    {
        Complete,
        Retry,
        DeadLetter,
    }

    [Theory]
    [InlineData(Settlement.Complete, false)]
    [InlineData(Settlement.Retry, false)]
    [InlineData(Settlement.DeadLetter, false)]
    [InlineData(Settlement.Complete, true)]
    [InlineData(Settlement.Retry, true)]
    [InlineData(Settlement.DeadLetter, true)]
    public async Task A_settlement_that_throws_is_followed_by_exactly_one_return_and_the_pipeline_goes_on(Settlement settlement, bool callbackSwallowsTheFailure)
    {
        await using var harness = await PipelineHarness.StartAsync(PipelineHarness.Subscription(concurrency: 1, prefetch: 5), async (delivery, ct) =>
        {
            try
            {
                await SettleAsync(delivery, settlement, ct);
            }
            catch (InvalidOperationException) when (callbackSwallowsTheFailure)
            {
                // A delivery callback that logs the broker's error and moves on: the pipeline still owes the broker an answer.
            }
        });
        var failure = new InvalidOperationException("the broker refused the settlement");
        var before = harness.Submit("m1");
        var failing = harness.Submit(new FakeMessage("m2", log: harness.Log)
        {
            CompleteFailure = settlement == Settlement.Complete ? failure : null,
            RetryFailure = settlement == Settlement.Retry ? failure : null,
            DeadLetterFailure = settlement == Settlement.DeadLetter ? failure : null,
        });
        var after = harness.Submit("m3");

        await Wait.UntilAsync(() => failing.ReturnCalls == 1, "the message whose settlement failed was returned");
        await Wait.ForAsync(after.FirstSettlementCall, "the message after it to be handled");
        await harness.StopAsync();

        Assert.Equal(1, Calls(failing, settlement));
        Assert.Equal(1, failing.ReturnCalls);
        Assert.Equal(2, failing.SettlementCalls);
        Assert.True(harness.Log.PositionOf($"{Name(settlement)}:m2") < harness.Log.PositionOf("return:m2"), harness.Log.ToString());
        foreach (var message in new[] { before, after })
        {
            Assert.Equal(1, Calls(message, settlement));
            Assert.Equal(1, message.SettlementCalls);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_handler_path_that_settles_nothing_gets_its_message_returned_once_and_frees_its_slot(bool throws)
    {
        await using var harness = await PipelineHarness.StartAsync(PipelineHarness.Subscription(concurrency: 1, prefetch: 5), async (delivery, ct) =>
        {
            await Task.Yield();
            if (delivery.MessageId == "m1")
            {
                if (throws)
                {
                    throw new InvalidOperationException("the handler path failed before it settled");
                }
                return;
            }
            await delivery.CompleteAsync(ct);
        });
        var unsettled = harness.Submit("m1");
        var next = harness.Submit("m2");

        await Wait.ForAsync(next.FirstSettlementCall, "the next message to get the only slot");
        await harness.StopAsync();

        Assert.Equal(1, unsettled.ReturnCalls);
        Assert.Equal(1, unsettled.SettlementCalls);
        Assert.Equal(1, next.CompleteCalls);
        Assert.Equal(1, next.SettlementCalls);
        Assert.Equal(0, harness.Pipeline.HeldCount);
    }

    [Fact]
    public async Task A_second_settlement_of_the_same_delivery_is_ignored()
    {
        await using var harness = await PipelineHarness.StartAsync(PipelineHarness.Subscription(concurrency: 2), async (delivery, ct) =>
        {
            await delivery.CompleteAsync(ct);
            await delivery.RetryAsync(TimeSpan.Zero, ct);
            await delivery.DeadLetterAsync(Metadata.DeadLetter(), ct);
            await delivery.CompleteAsync(ct);
        });
        var message = harness.Submit("m1");

        await Wait.ForAsync(message.FirstSettlementCall, "the message to be settled");
        await harness.StopAsync();

        Assert.Equal(1, message.CompleteCalls);
        Assert.Equal(1, message.SettlementCalls);
    }

    private static Task SettleAsync(ITransportDelivery delivery, Settlement settlement, CancellationToken ct) => settlement switch
    {
        Settlement.Complete => delivery.CompleteAsync(ct),
        Settlement.Retry => delivery.RetryAsync(TimeSpan.FromSeconds(5), ct),
        _ => delivery.DeadLetterAsync(Metadata.DeadLetter(), ct),
    };

    private static int Calls(FakeMessage message, Settlement settlement) => settlement switch
    {
        Settlement.Complete => message.CompleteCalls,
        Settlement.Retry => message.RetryCalls,
        _ => message.DeadLetterCalls,
    };

    private static string Name(Settlement settlement) => settlement switch
    {
        Settlement.Complete => "complete",
        Settlement.Retry => "retry",
        _ => "dead-letter",
    };
}
