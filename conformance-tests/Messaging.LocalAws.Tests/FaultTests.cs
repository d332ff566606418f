using System.Net;
using Amazon.Runtime;
using Amazon.SQS;
using Amazon.SQS.Model;

namespace Messaging.LocalAws.Tests;

/// <summary>The injected faults: requests refused as AWS refuses them when it cannot take them (503 ServiceUnavailable), and visibility timeouts ended at once.</summary>
public sealed class FaultTests : LocalAwsTestBase
{
    private async Task<List<string>> DrainAsync(string queueUrl)
    {
        var bodies = new List<string>();
        while (true)
        {
            var received = await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = queueUrl, MaxNumberOfMessages = 10, WaitTimeSeconds = 1 }, Cancellation);
            if (received.Messages is not { Count: > 0 } messages)
            {
                return bodies;
            }

            bodies.AddRange(messages.Select(m => m.Body));
        }
    }

    [Fact]
    public async Task Refused_sqs_requests_fail_with_503_ServiceUnavailable_and_store_nothing_until_disposed()
    {
        var url = (await Sqs.CreateQueueAsync("refused", Cancellation)).QueueUrl;

        using (Endpoint.RefuseRequests("sqs", "SendMessage"))
        {
            var refused = await Assert.ThrowsAsync<AmazonSQSException>(() => Sqs.SendMessageAsync(url, "refused", Cancellation));
            Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
            Assert.Equal("ServiceUnavailable", refused.ErrorCode);
            Assert.Equal(ErrorType.Receiver, refused.ErrorType);

            // Other actions go through.
            Assert.Empty(await DrainAsync(url));
        }

        using (Endpoint.RefuseRequests("SQS"))
        {
            var batch = await Assert.ThrowsAsync<AmazonSQSException>(() => Sqs.SendMessageBatchAsync(url, [new SendMessageBatchRequestEntry("1", "refused batch")], Cancellation));
            Assert.Equal("ServiceUnavailable", batch.ErrorCode);
            var attributes = await Assert.ThrowsAsync<AmazonSQSException>(() => Sqs.GetQueueAttributesAsync(url, ["All"], Cancellation));
            Assert.Equal(HttpStatusCode.ServiceUnavailable, attributes.StatusCode);

            // SNS is another service.
            await Sns.CreateTopicAsync("unaffected", Cancellation);
        }

        await Sqs.SendMessageAsync(url, "accepted", Cancellation);
        Assert.Equal(["accepted"], await DrainAsync(url));
    }

    [Fact]
    public async Task Refused_sns_requests_answer_the_query_ErrorResponse_and_publish_nothing_until_disposed()
    {
        var topicArn = await Sns.CreateTopicAsync("refused", Cancellation);
        var queueUrl = (await Sqs.CreateQueueAsync("subscriber", Cancellation)).QueueUrl;
        var queueArn = (await Sqs.GetQueueAttributesAsync(queueUrl, ["QueueArn"], Cancellation)).Attributes["QueueArn"];
        await Sqs.SetQueueAttributesAsync(queueUrl, new() { ["Policy"] = SnsEndpointTests.TopicPolicy(queueArn, topicArn) }, Cancellation);
        await Sns.SubscribeAsync(topicArn, queueArn, raw: true, Cancellation);

        var refusal = Endpoint.RefuseRequests("sns", "Publish");
        var refused = await Sns.SendAsync("Publish", [new("TopicArn", topicArn), new("Message", "refused")], cancellationToken: Cancellation);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.Equal("ServiceUnavailable", refused.ErrorCode);
        Assert.Equal("Receiver", refused.Value("Type"));
        Assert.False(string.IsNullOrEmpty(refused.Value("RequestId")));

        using (Endpoint.RefuseRequests())
        {
            var batch = await Sns.SendAsync("PublishBatch",
            [
                new("TopicArn", topicArn),
                new("PublishBatchRequestEntries.member.1.Id", "1"),
                new("PublishBatchRequestEntries.member.1.Message", "refused batch"),
            ], cancellationToken: Cancellation);
            Assert.Equal(HttpStatusCode.ServiceUnavailable, batch.StatusCode);
            Assert.Equal("ServiceUnavailable", batch.ErrorCode);
            var receive = await Assert.ThrowsAsync<AmazonSQSException>(() => Sqs.ReceiveMessageAsync(queueUrl, Cancellation));
            Assert.Equal("ServiceUnavailable", receive.ErrorCode);
        }

        // Only the Publish refusal is left: other actions work, Publish is still refused.
        (await Sns.SendAsync("ListTopics", [], cancellationToken: Cancellation)).Ok();
        Assert.Equal("ServiceUnavailable", (await Sns.SendAsync("Publish", [new("TopicArn", topicArn), new("Message", "refused")], cancellationToken: Cancellation)).ErrorCode);
        refusal.Dispose();
        refusal.Dispose();

        (await Sns.SendAsync("Publish", [new("TopicArn", topicArn), new("Message", "accepted")], cancellationToken: Cancellation)).Ok();
        Assert.Equal(["accepted"], await DrainAsync(queueUrl));
    }

    [Fact]
    public async Task A_long_poll_waiting_when_the_refusal_starts_finishes_normally()
    {
        var url = (await Sqs.CreateQueueAsync("polled", Cancellation)).QueueUrl;
        var polling = Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, WaitTimeSeconds = 20 }, Cancellation);
        await Until.TrueAsync(() => Endpoint.WaitingReceivePolls == 1, "the long poll waits");

        using (Endpoint.RefuseRequests("sqs", "ReceiveMessage"))
        {
            var refused = await Assert.ThrowsAsync<AmazonSQSException>(() => Sqs.ReceiveMessageAsync(url, Cancellation));
            Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
            await Sqs.SendMessageAsync(url, "for the waiting poll", Cancellation);

            var received = await polling;
            Assert.Equal("for the waiting poll", Assert.Single(received.Messages).Body);
        }
    }

    [Fact]
    public async Task Expired_visibility_makes_the_message_receivable_again_and_its_old_receipt_handle_stale()
    {
        var url = (await Sqs.CreateQueueAsync("leased", Cancellation)).QueueUrl;
        await Sqs.SendMessageAsync(url, "held", Cancellation);
        var first = Assert.Single((await ReceiveAsync(url, 0)).Messages);
        Assert.Equal("1", first.Attributes["ApproximateReceiveCount"]);

        Assert.Equal(1, Endpoint.ExpireVisibility("leased"));
        Assert.Equal(0, Endpoint.ExpireVisibility("leased"));
        Assert.Throws<InvalidOperationException>(() => Endpoint.ExpireVisibility("LEASED"));

        // Visible again but not yet received: the old handle is still the latest, yet the message is not in flight.
        await Assert.ThrowsAsync<MessageNotInflightException>(() => Sqs.ChangeMessageVisibilityAsync(url, first.ReceiptHandle, 30, Cancellation));

        // Received again (well before its 600 s timeout would have ended), under a new handle, counted twice.
        var second = Assert.Single((await ReceiveAsync(url, 0)).Messages);
        Assert.Equal(first.MessageId, second.MessageId);
        Assert.NotEqual(first.ReceiptHandle, second.ReceiptHandle);
        Assert.Equal("2", second.Attributes["ApproximateReceiveCount"]);

        // The old handle is stale now: changing the visibility with it fails as SQS fails it, deleting with it succeeds
        // but deletes nothing.
        var stale = await Assert.ThrowsAsync<AmazonSQSException>(() => Sqs.ChangeMessageVisibilityAsync(url, first.ReceiptHandle, 30, Cancellation));
        Assert.Equal(HttpStatusCode.BadRequest, stale.StatusCode);
        Assert.Equal("InvalidParameterValue", stale.ErrorCode);
        Assert.Contains("Message does not exist or is not available for visibility timeout change", stale.Message, StringComparison.Ordinal);
        await Sqs.DeleteMessageAsync(url, first.ReceiptHandle, Cancellation);
        Assert.Equal("1", (await AttributesAsync(url))["ApproximateNumberOfMessagesNotVisible"]);

        // The new handle works.
        await Sqs.ChangeMessageVisibilityAsync(url, second.ReceiptHandle, 60, Cancellation);
        await Sqs.DeleteMessageAsync(url, second.ReceiptHandle, Cancellation);
        var attributes = await AttributesAsync(url);
        Assert.Equal("0", attributes["ApproximateNumberOfMessages"]);
        Assert.Equal("0", attributes["ApproximateNumberOfMessagesNotVisible"]);
    }

    [Fact]
    public async Task Expired_visibility_wakes_a_waiting_long_poll_and_leaves_delayed_messages_delayed()
    {
        var url = (await Sqs.CreateQueueAsync("in-flight", Cancellation)).QueueUrl;
        var bystander = (await Sqs.CreateQueueAsync("bystander", Cancellation)).QueueUrl;
        await Sqs.SendMessageBatchAsync(url, [new("a", "first"), new("b", "second")], Cancellation);
        await Sqs.SendMessageAsync(bystander, "untouched", Cancellation);
        Assert.Equal(2, (await ReceiveAsync(url, 0)).Messages.Count);
        Assert.Single((await ReceiveAsync(bystander, 0)).Messages);
        await Sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = "delayed", DelaySeconds = 900 }, Cancellation);

        var polling = ReceiveAsync(url, 20);
        await Until.TrueAsync(() => Endpoint.WaitingReceivePolls == 1, "the long poll waits");
        Assert.Equal(2, Endpoint.ExpireVisibility("in-flight"));

        // Without the fault the poll would have ended empty: the messages were hidden for 600 s.
        var again = (await polling).Messages;
        Assert.Equal(["first", "second"], again.Select(m => m.Body).Order(StringComparer.Ordinal));
        Assert.All(again, m => Assert.Equal("2", m.Attributes["ApproximateReceiveCount"]));
        var attributes = await AttributesAsync(url);
        Assert.Equal("2", attributes["ApproximateNumberOfMessagesNotVisible"]);
        Assert.Equal("1", attributes["ApproximateNumberOfMessagesDelayed"]);
        Assert.Equal("1", (await AttributesAsync(bystander))["ApproximateNumberOfMessagesNotVisible"]);
    }

    private Task<ReceiveMessageResponse> ReceiveAsync(string queueUrl, int waitTimeSeconds) =>
        Sqs.ReceiveMessageAsync(new ReceiveMessageRequest
        {
            QueueUrl = queueUrl,
            MaxNumberOfMessages = 10,
            VisibilityTimeout = 600,
            WaitTimeSeconds = waitTimeSeconds,
            MessageSystemAttributeNames = ["ApproximateReceiveCount"],
        }, Cancellation);

    private async Task<Dictionary<string, string>> AttributesAsync(string queueUrl) =>
        (await Sqs.GetQueueAttributesAsync(queueUrl, ["All"], Cancellation)).Attributes;

    [Fact]
    public void Only_sns_and_sqs_can_be_refused()
    {
        Assert.Throws<ArgumentException>(() => Endpoint.RefuseRequests("s3"));
        Assert.Throws<ArgumentException>(() => Endpoint.RefuseRequests("sqs", " "));
    }
}
