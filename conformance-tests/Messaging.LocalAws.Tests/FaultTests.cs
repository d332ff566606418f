using System.Net;
using Amazon.Runtime;
using Amazon.SQS;
using Amazon.SQS.Model;

namespace Messaging.LocalAws.Tests;

/// <summary>The injected fault: requests refused as AWS refuses them when it cannot take them (503 ServiceUnavailable).</summary>
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
    public void Only_sns_and_sqs_can_be_refused()
    {
        Assert.Throws<ArgumentException>(() => Endpoint.RefuseRequests("s3"));
        Assert.Throws<ArgumentException>(() => Endpoint.RefuseRequests("sqs", " "));
    }
}
