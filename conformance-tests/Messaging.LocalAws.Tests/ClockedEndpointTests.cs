using Amazon.Runtime;
using Amazon.SQS;
using Amazon.SQS.Model;

namespace Messaging.LocalAws.Tests;

/// <summary>Rules measured in minutes or hours, checked with a clock the test moves instead of waiting.</summary>
public sealed class ClockedEndpointTests : IAsyncLifetime
{
    private readonly ManualClock _clock = new(DateTimeOffset.UtcNow);
    private LocalAwsEndpoint _endpoint = null!;
    private AmazonSQSClient _sqs = null!;

    private static CancellationToken Cancellation => TestContext.Current.CancellationToken;

    public async ValueTask InitializeAsync()
    {
        _endpoint = await LocalAwsEndpoint.StartAsync(new LocalAwsEndpointOptions { TimeProvider = _clock }, Cancellation);
        _sqs = new AmazonSQSClient(new BasicAWSCredentials("test", "test"), new AmazonSQSConfig
        {
            ServiceURL = _endpoint.ServiceUrl.ToString(),
            AuthenticationRegion = _endpoint.Region,
            MaxErrorRetry = 0,
        });
    }

    public async ValueTask DisposeAsync()
    {
        _sqs.Dispose();
        await _endpoint.DisposeAsync();
    }

    private async Task<string> Count(string url, string attribute) =>
        (await _sqs.GetQueueAttributesAsync(url, ["All"], Cancellation)).Attributes[attribute];

    [Fact]
    public async Task Messages_older_than_the_retention_period_are_deleted()
    {
        var url = (await _sqs.CreateQueueAsync(new CreateQueueRequest { QueueName = "short-lived", Attributes = new() { ["MessageRetentionPeriod"] = "60" } }, Cancellation)).QueueUrl;
        await _sqs.SendMessageAsync(url, "old", Cancellation);
        _clock.Advance(TimeSpan.FromSeconds(59));
        await _sqs.SendMessageAsync(url, "young", Cancellation);
        Assert.Equal("2", await Count(url, "ApproximateNumberOfMessages"));

        _clock.Advance(TimeSpan.FromSeconds(2));

        Assert.Equal("1", await Count(url, "ApproximateNumberOfMessages"));
        var received = await _sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, MaxNumberOfMessages = 10 }, Cancellation);
        Assert.Equal("young", Assert.Single(received.Messages).Body);
    }

    [Fact]
    public async Task Visibility_timeout_ends_on_time_and_the_total_may_not_pass_twelve_hours()
    {
        var url = (await _sqs.CreateQueueAsync("clocked-visibility", Cancellation)).QueueUrl;
        await _sqs.SendMessageAsync(url, "m", Cancellation);
        var first = Assert.Single((await _sqs.ReceiveMessageAsync(url, Cancellation)).Messages);

        _clock.Advance(TimeSpan.FromSeconds(29));
        Assert.Null((await _sqs.ReceiveMessageAsync(url, Cancellation)).Messages);
        _clock.Advance(TimeSpan.FromSeconds(1));
        var second = Assert.Single((await _sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, VisibilityTimeout = 43_200 }, Cancellation)).Messages);
        Assert.Equal(first.MessageId, second.MessageId);

        _clock.Advance(TimeSpan.FromHours(1));
        var error = await Assert.ThrowsAsync<AmazonSQSException>(() => _sqs.ChangeMessageVisibilityAsync(url, second.ReceiptHandle, 39_601, Cancellation));
        Assert.Contains("43200", error.Message, StringComparison.Ordinal);
        await _sqs.ChangeMessageVisibilityAsync(url, second.ReceiptHandle, 39_600, Cancellation);
    }

    [Fact]
    public async Task Queue_name_and_purge_become_available_again_after_sixty_seconds()
    {
        var url = (await _sqs.CreateQueueAsync("recycled", Cancellation)).QueueUrl;
        await _sqs.PurgeQueueAsync(url, Cancellation);
        _clock.Advance(TimeSpan.FromSeconds(60));
        await _sqs.PurgeQueueAsync(url, Cancellation);

        await _sqs.DeleteQueueAsync(url, Cancellation);
        _clock.Advance(TimeSpan.FromSeconds(59));
        await Assert.ThrowsAsync<QueueDeletedRecentlyException>(() => _sqs.CreateQueueAsync("recycled", Cancellation));
        _clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(url, (await _sqs.CreateQueueAsync("recycled", Cancellation)).QueueUrl);
    }

    [Fact]
    public async Task Long_poll_whose_client_went_away_still_takes_a_message_that_nobody_gets()
    {
        var url = (await _sqs.CreateQueueAsync("abandoned-poll", Cancellation)).QueueUrl; // VisibilityTimeout 30
        using var crash = CancellationTokenSource.CreateLinkedTokenSource(Cancellation);
        var abandoned = _sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, WaitTimeSeconds = 20 }, crash.Token);
        await Until.TrueAsync(() => _endpoint.WaitingReceivePolls == 1, "the long poll waits on the endpoint");
        await crash.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => abandoned);
        await Until.TrueAsync(() => _endpoint.AbandonedReceivePolls == 1, "the endpoint sees the client go away");

        // Within the abandoned poll's 20 seconds: SQS hands the message to it, and nobody gets it.
        var sent = await _sqs.SendMessageAsync(url, "for nobody", Cancellation);
        await Until.TrueAsync(async () => await Count(url, "ApproximateNumberOfMessagesNotVisible") == "1",
            "the abandoned poll takes the message (in flight, although nobody received it)");
        Assert.Equal("0", await Count(url, "ApproximateNumberOfMessages"));
        await Until.TrueAsync(() => _endpoint.WaitingReceivePolls == 0, "the abandoned poll ends, having taken a message");

        var receive = new ReceiveMessageRequest { QueueUrl = url, MessageSystemAttributeNames = ["ApproximateReceiveCount"] };
        Assert.Null((await _sqs.ReceiveMessageAsync(receive, Cancellation)).Messages);
        _clock.Advance(TimeSpan.FromSeconds(29));
        Assert.Null((await _sqs.ReceiveMessageAsync(receive, Cancellation)).Messages);
        _clock.Advance(TimeSpan.FromSeconds(1));
        var received = Assert.Single((await _sqs.ReceiveMessageAsync(receive, Cancellation)).Messages);
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
