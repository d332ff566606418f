using Amazon.SQS;
using Amazon.SQS.Model;

namespace Messaging.LocalAws.Tests;

/// <summary>SQS FIFO queues and SNS FIFO topics, on a clock the test moves.</summary>
public sealed class FifoEndpointTests : LocalAwsTestBase
{
    private readonly ManualClock _clock = new(DateTimeOffset.UtcNow);

    protected override TimeProvider Time => _clock;

    private async Task<string> FifoQueue(string name, bool contentBased = false) =>
        (await Sqs.CreateQueueAsync(new CreateQueueRequest
        {
            QueueName = name,
            Attributes = new() { ["FifoQueue"] = "true", ["ContentBasedDeduplication"] = contentBased ? "true" : "false" },
        }, Cancellation)).QueueUrl;

    private Task<SendMessageResponse> Send(string url, string body, string group, string? deduplicationId = null) =>
        Sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = body, MessageGroupId = group, MessageDeduplicationId = deduplicationId ?? body }, Cancellation);

    private async Task<List<Message>> Receive(string url, int max = 10) =>
        (await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest
        {
            QueueUrl = url,
            MaxNumberOfMessages = max,
            VisibilityTimeout = 30,
            MessageSystemAttributeNames = ["All"],
        }, Cancellation)).Messages ?? [];

    [Fact]
    public async Task A_group_with_a_message_in_flight_hands_out_nothing_until_it_is_deleted_or_visible_again()
    {
        var url = await FifoQueue("groups.fifo");
        await Send(url, "a1", "a");
        await Send(url, "a2", "a");
        await Send(url, "b1", "b");

        var first = Assert.Single(await Receive(url, 1));
        Assert.Equal("a1", first.Body);
        Assert.Equal("b1", Assert.Single(await Receive(url)).Body); // a is locked behind a1
        Assert.Empty(await Receive(url));

        // A retry: a1 invisible for 5 s keeps the group locked; then a1 comes first again, a2 after it.
        await Sqs.ChangeMessageVisibilityAsync(url, first.ReceiptHandle, 5, Cancellation);
        _clock.Advance(TimeSpan.FromSeconds(4));
        Assert.Empty(await Receive(url));
        _clock.Advance(TimeSpan.FromSeconds(1));
        var again = await Receive(url);
        Assert.Equal(["a1", "a2"], again.Select(m => m.Body));
        Assert.Equal("2", again[0].Attributes["ApproximateReceiveCount"]);
        Assert.Equal("a", again[0].Attributes["MessageGroupId"]);
        Assert.Equal("a1", again[0].Attributes["MessageDeduplicationId"]);

        // Giving a2 back while a1 stays in flight: still nothing of a.
        await Sqs.ChangeMessageVisibilityAsync(url, again[1].ReceiptHandle, 0, Cancellation);
        Assert.Empty(await Receive(url));
        await Sqs.DeleteMessageAsync(url, again[0].ReceiptHandle, Cancellation);
        Assert.Equal("a2", Assert.Single(await Receive(url)).Body);
    }

    [Fact]
    public async Task A_deduplication_id_is_remembered_for_5_minutes_from_the_first_send()
    {
        var url = await FifoQueue("dedup.fifo");
        var first = await Send(url, "one", "g", "id-1");
        _clock.Advance(TimeSpan.FromMinutes(4));
        var duplicate = await Send(url, "two", "g", "id-1");
        Assert.Equal(first.MessageId, duplicate.MessageId);
        Assert.Equal(first.SequenceNumber, duplicate.SequenceNumber);
        var received = Assert.Single(await Receive(url));
        Assert.Equal("one", received.Body);
        await Sqs.DeleteMessageAsync(url, received.ReceiptHandle, Cancellation);

        _clock.Advance(TimeSpan.FromMinutes(1)); // 5 minutes after the first send: forgotten
        var later = await Send(url, "three", "g", "id-1");
        Assert.NotEqual(first.MessageId, later.MessageId);
        Assert.True(decimal.Parse(later.SequenceNumber, System.Globalization.CultureInfo.InvariantCulture) > decimal.Parse(first.SequenceNumber, System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal("three", Assert.Single(await Receive(url)).Body);
    }

    [Fact]
    public async Task Content_based_deduplication_uses_the_body()
    {
        var url = await FifoQueue("content.fifo", contentBased: true);
        await Sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = "same", MessageGroupId = "g" }, Cancellation);
        await Sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = "same", MessageGroupId = "h" }, Cancellation);
        Assert.Single(await Receive(url));
    }

    [Fact]
    public async Task Invalid_FIFO_requests_are_refused_as_SQS_refuses_them()
    {
        var url = await FifoQueue("errors.fifo");
        var noGroup = await Assert.ThrowsAsync<AmazonSQSException>(() =>
            Sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = "x", MessageDeduplicationId = "d" }, Cancellation));
        Assert.Equal("MissingParameter", noGroup.ErrorCode);
        var noDeduplication = await Assert.ThrowsAsync<AmazonSQSException>(() =>
            Sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = "x", MessageGroupId = "g" }, Cancellation));
        Assert.Equal("InvalidParameterValue", noDeduplication.ErrorCode);
        Assert.Contains("ContentBasedDeduplication", noDeduplication.Message);
        var delay = await Assert.ThrowsAsync<AmazonSQSException>(() =>
            Sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = "x", MessageGroupId = "g", MessageDeduplicationId = "d", DelaySeconds = 5 }, Cancellation));
        Assert.Equal("InvalidParameterValue", delay.ErrorCode);
        var badGroup = await Assert.ThrowsAsync<AmazonSQSException>(() => Send(url, "x", "with space"));
        Assert.Equal("InvalidParameterValue", badGroup.ErrorCode);

        var nameWithoutAttribute = await Assert.ThrowsAsync<AmazonSQSException>(() => Sqs.CreateQueueAsync("plain.fifo", Cancellation));
        Assert.Equal("InvalidParameterValue", nameWithoutAttribute.ErrorCode);
        var attributeWithoutName = await Assert.ThrowsAsync<AmazonSQSException>(() =>
            Sqs.CreateQueueAsync(new CreateQueueRequest { QueueName = "plain", Attributes = new() { ["FifoQueue"] = "true" } }, Cancellation));
        Assert.Equal("InvalidParameterValue", attributeWithoutName.ErrorCode);

        var standard = (await Sqs.CreateQueueAsync("standard-dlq", Cancellation)).QueueUrl;
        var standardArn = (await Sqs.GetQueueAttributesAsync(standard, ["QueueArn"], Cancellation)).Attributes["QueueArn"];
        var mixed = await Assert.ThrowsAsync<AmazonSQSException>(() => Sqs.SetQueueAttributesAsync(url, new Dictionary<string, string>
        {
            ["RedrivePolicy"] = $$"""{"deadLetterTargetArn":"{{standardArn}}","maxReceiveCount":3}""",
        }, Cancellation));
        Assert.Equal("InvalidParameterValue", mixed.ErrorCode);
        var fifoOnly = await Assert.ThrowsAnyAsync<AmazonSQSException>(() => Sqs.SetQueueAttributesAsync(standard, new Dictionary<string, string>
        {
            ["ContentBasedDeduplication"] = "true",
        }, Cancellation));
        Assert.Equal("InvalidAttributeName", fifoOnly.ErrorCode);

        var attributes = (await Sqs.GetQueueAttributesAsync(url, ["All"], Cancellation)).Attributes;
        Assert.Equal("true", attributes["FifoQueue"]);
        Assert.Equal("false", attributes["ContentBasedDeduplication"]);
        Assert.Equal("queue", attributes["DeduplicationScope"]);
    }

    [Fact]
    public async Task A_FIFO_topic_fans_out_to_FIFO_and_standard_queues_with_group_and_deduplication()
    {
        var topicArn = (await Sns.SendAsync("CreateTopic",
        [
            new("Name", "orders.fifo"),
            new("Attributes.entry.1.key", "FifoTopic"),
            new("Attributes.entry.1.value", "true"),
        ], cancellationToken: Cancellation)).Ok().Value("TopicArn");
        var fifoUrl = await FifoQueue("billing.fifo");
        var standardUrl = (await Sqs.CreateQueueAsync("audit", Cancellation)).QueueUrl;
        foreach (var url in new[] { fifoUrl, standardUrl })
        {
            var arn = (await Sqs.GetQueueAttributesAsync(url, ["QueueArn"], Cancellation)).Attributes["QueueArn"];
            await Sqs.SetQueueAttributesAsync(url, new Dictionary<string, string>
            {
                ["Policy"] = "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":{\"Service\":\"sns.amazonaws.com\"},\"Action\":\"sqs:SendMessage\",\"Resource\":\"" + arn
                    + "\",\"Condition\":{\"ArnEquals\":{\"aws:SourceArn\":\"" + topicArn + "\"}}}]}",
            }, Cancellation);
            await Sns.SubscribeAsync(topicArn, arn, raw: true, Cancellation);
        }

        Task<SnsResponse> Publish(string message, string? group, string? deduplicationId)
        {
            var parameters = new List<KeyValuePair<string, string>> { new("TopicArn", topicArn), new("Message", message) };
            if (group is not null)
            {
                parameters.Add(new("MessageGroupId", group));
            }
            if (deduplicationId is not null)
            {
                parameters.Add(new("MessageDeduplicationId", deduplicationId));
            }
            return Sns.SendAsync("Publish", parameters, cancellationToken: Cancellation);
        }

        var first = (await Publish("m1", "k", "e1")).Ok();
        Assert.NotEmpty(first.Value("SequenceNumber"));
        (await Publish("m2", "k", "e2")).Ok();
        Assert.Equal(first.Value("MessageId"), (await Publish("m1 again", "k", "e1")).Ok().Value("MessageId")); // deduplicated
        Assert.Equal("InvalidParameter", (await Publish("no group", null, "e3")).ErrorCode);
        Assert.Equal("InvalidParameter", (await Publish("no id", "k", null)).ErrorCode);

        var fifo = await Receive(fifoUrl);
        Assert.Equal(["m1", "m2"], fifo.Select(m => m.Body));
        Assert.All(fifo, m => Assert.Equal("k", m.Attributes["MessageGroupId"]));
        Assert.Equal("e1", fifo[0].Attributes["MessageDeduplicationId"]);
        Assert.Equal(2, (await Receive(standardUrl)).Count);

        // A standard topic cannot deliver to a FIFO queue.
        var standardTopic = await Sns.CreateTopicAsync("plain", Cancellation);
        var fifoArn = (await Sqs.GetQueueAttributesAsync(fifoUrl, ["QueueArn"], Cancellation)).Attributes["QueueArn"];
        var refused = await Sns.SendAsync("Subscribe", [new("TopicArn", standardTopic), new("Protocol", "sqs"), new("Endpoint", fifoArn)], cancellationToken: Cancellation);
        Assert.Equal("InvalidParameter", refused.ErrorCode);
        // And a FIFO topic needs the attribute and the suffix together.
        var noSuffix = await Sns.SendAsync("CreateTopic", [new("Name", "nosuffix"), new("Attributes.entry.1.key", "FifoTopic"), new("Attributes.entry.1.value", "true")], cancellationToken: Cancellation);
        Assert.Equal("InvalidParameter", noSuffix.ErrorCode);
        Assert.Equal("InvalidParameter", (await Sns.SendAsync("CreateTopic", [new("Name", "noattribute.fifo")], cancellationToken: Cancellation)).ErrorCode);
    }

    private sealed class ManualClock(DateTimeOffset start) : TimeProvider
    {
        private long _utcTicks = start.UtcTicks;

        public override DateTimeOffset GetUtcNow() => new(Interlocked.Read(ref _utcTicks), TimeSpan.Zero);

        public void Advance(TimeSpan by) => Interlocked.Add(ref _utcTicks, by.Ticks);
    }
}
