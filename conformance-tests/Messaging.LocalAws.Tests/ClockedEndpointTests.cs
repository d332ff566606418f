using Amazon.SQS;
using Amazon.SQS.Model;

namespace Messaging.LocalAws.Tests;

/// <summary>Rules measured in minutes or hours, checked with a clock the test moves instead of waiting.</summary>
public sealed class ClockedEndpointTests : LocalAwsTestBase
{
    private readonly ManualClock _clock = new(DateTimeOffset.UtcNow);

    protected override TimeProvider Time => _clock;

    private async Task<string> Count(string url, string attribute) =>
        (await Sqs.GetQueueAttributesAsync(url, ["All"], Cancellation)).Attributes[attribute];

    [Fact]
    public async Task Messages_older_than_the_retention_period_are_deleted()
    {
        var url = (await Sqs.CreateQueueAsync(new CreateQueueRequest { QueueName = "short-lived", Attributes = new() { ["MessageRetentionPeriod"] = "60" } }, Cancellation)).QueueUrl;
        await Sqs.SendMessageAsync(url, "old", Cancellation);
        _clock.Advance(TimeSpan.FromSeconds(59));
        await Sqs.SendMessageAsync(url, "young", Cancellation);
        Assert.Equal("2", await Count(url, "ApproximateNumberOfMessages"));

        _clock.Advance(TimeSpan.FromSeconds(2));

        Assert.Equal("1", await Count(url, "ApproximateNumberOfMessages"));
        var received = await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, MaxNumberOfMessages = 10 }, Cancellation);
        Assert.Equal("young", Assert.Single(received.Messages).Body);
    }

    [Fact]
    public async Task Visibility_timeout_ends_on_time_and_the_total_may_not_pass_twelve_hours()
    {
        var url = (await Sqs.CreateQueueAsync("clocked-visibility", Cancellation)).QueueUrl;
        await Sqs.SendMessageAsync(url, "m", Cancellation);
        var first = Assert.Single((await Sqs.ReceiveMessageAsync(url, Cancellation)).Messages);

        _clock.Advance(TimeSpan.FromSeconds(29));
        Assert.Null((await Sqs.ReceiveMessageAsync(url, Cancellation)).Messages);
        _clock.Advance(TimeSpan.FromSeconds(1));
        var second = Assert.Single((await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, VisibilityTimeout = 43_200 }, Cancellation)).Messages);
        Assert.Equal(first.MessageId, second.MessageId);

        _clock.Advance(TimeSpan.FromHours(1));
        var error = await Assert.ThrowsAsync<AmazonSQSException>(() => Sqs.ChangeMessageVisibilityAsync(url, second.ReceiptHandle, 39_601, Cancellation));
        Assert.Contains("43200", error.Message, StringComparison.Ordinal);
        await Sqs.ChangeMessageVisibilityAsync(url, second.ReceiptHandle, 39_600, Cancellation);
    }

    [Fact]
    public async Task Queue_name_and_purge_become_available_again_after_sixty_seconds()
    {
        var url = (await Sqs.CreateQueueAsync("recycled", Cancellation)).QueueUrl;
        await Sqs.PurgeQueueAsync(url, Cancellation);
        _clock.Advance(TimeSpan.FromSeconds(60));
        await Sqs.PurgeQueueAsync(url, Cancellation);

        await Sqs.DeleteQueueAsync(url, Cancellation);
        _clock.Advance(TimeSpan.FromSeconds(59));
        await Assert.ThrowsAsync<QueueDeletedRecentlyException>(() => Sqs.CreateQueueAsync("recycled", Cancellation));
        _clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(url, (await Sqs.CreateQueueAsync("recycled", Cancellation)).QueueUrl);
    }

    [Fact]
    public async Task Long_poll_whose_client_went_away_still_takes_a_message_that_nobody_gets()
    {
        var url = (await Sqs.CreateQueueAsync("abandoned-poll", Cancellation)).QueueUrl; // VisibilityTimeout 30
        using var crash = CancellationTokenSource.CreateLinkedTokenSource(Cancellation);
        var abandoned = Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, WaitTimeSeconds = 20 }, crash.Token);
        await Until.TrueAsync(() => Endpoint.WaitingReceivePolls == 1, "the long poll waits on the endpoint");
        await crash.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => abandoned);
        await Until.TrueAsync(() => Endpoint.AbandonedReceivePolls == 1, "the endpoint sees the client go away");

        // Within the abandoned poll's 20 seconds: SQS hands the message to it, and nobody gets it.
        var sent = await Sqs.SendMessageAsync(url, "for nobody", Cancellation);
        await Until.TrueAsync(async () => await Count(url, "ApproximateNumberOfMessagesNotVisible") == "1",
            "the abandoned poll takes the message (in flight, although nobody received it)");
        Assert.Equal("0", await Count(url, "ApproximateNumberOfMessages"));
        await Until.TrueAsync(() => Endpoint.WaitingReceivePolls == 0, "the abandoned poll ends, having taken a message");

        var receive = new ReceiveMessageRequest { QueueUrl = url, MessageSystemAttributeNames = ["ApproximateReceiveCount"] };
        Assert.Null((await Sqs.ReceiveMessageAsync(receive, Cancellation)).Messages);
        _clock.Advance(TimeSpan.FromSeconds(29));
        Assert.Null((await Sqs.ReceiveMessageAsync(receive, Cancellation)).Messages);
        _clock.Advance(TimeSpan.FromSeconds(1));
        var received = Assert.Single((await Sqs.ReceiveMessageAsync(receive, Cancellation)).Messages);
        Assert.Equal(sent.MessageId, received.MessageId);
        Assert.Equal("2", received.Attributes["ApproximateReceiveCount"]);
    }

    /// <summary>Only "now" is manual; timers stay real, so a long poll would still end on time.</summary>
    private sealed class ManualClock(DateTimeOffset start) : TimeProvider
    {
        private long _utcTicks = start.UtcTicks;

        public override DateTimeOffset GetUtcNow() => new(Interlocked.Read(ref _utcTicks), TimeSpan.Zero);

        public void Advance(TimeSpan by) => Interlocked.Add(ref _utcTicks, by.Ticks);
    }
}
