using Amazon.SQS.Model;
using CloudNative.CloudEvents;
using Messaging.Aws;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.ConformanceTests.Transports;
using Messaging.Policy;
using Messaging.Topology;
using Microsoft.Extensions.Logging.Abstractions;

namespace Messaging.ConformanceTests.Aws;

/// <summary>Ordered subscriptions on SNS/SQS: FIFO topology, group and deduplication ids on the wire, and start-up contradictions.</summary>
public sealed class SnsSqsFifoTests(AwsFixture fixture) : IClassFixture<AwsFixture>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static (string Topic, string Subscription) Names()
    {
        var id = Guid.NewGuid().ToString("N")[..10];
        return ($"fifo-{id}", $"fifo-{id}-s");
    }

    private SnsSqsTransport Transport(Action<SnsSqsTransportOptions>? configure = null)
    {
        var o = fixture.Options;
        var options = new SnsSqsTransportOptions
        {
            ServiceUrl = o.ServiceUrl, Region = o.Region, AccessKeyId = o.AccessKeyId, SecretAccessKey = o.SecretAccessKey, VisibilityTimeout = o.VisibilityTimeout,
        };
        configure?.Invoke(options);
        return new SnsSqsTransport(options, [], NullLoggerFactory.Instance);
    }

    private static SubscriptionDefinition Subscription(string name, string topic, bool ordered) => new()
    {
        Name = name,
        Topic = topic,
        Ordered = ordered,
        Retry = new RetryPolicy(3, Backoff.Fixed(TimeSpan.FromMilliseconds(100))),
    };

    private static CloudEvent Event(string id, string? key)
    {
        var e = new CloudEvent { Id = id, Source = new Uri("urn:fifo"), Type = "com.example.fifo", DataContentType = "text/plain", Data = "x"u8.ToArray() };
        if (key is not null)
        {
            e["partitionkey"] = key;
        }
        return e;
    }

    [Fact(Timeout = 60_000)]
    public async Task An_ordered_subscription_is_a_FIFO_queue_of_a_FIFO_topic_and_a_plain_publisher_finds_the_topic()
    {
        fixture.RequireBroker();
        var (topic, sub) = Names();
        await using (var consumer = Transport())
        {
            await consumer.ProvisionAsync(new MessagingTopology([topic], [Subscription(sub, topic, ordered: true)]), Ct);
        }

        var sqs = fixture.Clients.Sqs;
        var queueUrl = (await sqs.GetQueueUrlAsync(SnsSqsNames.FifoQueue(sub), Ct)).QueueUrl;
        var attributes = (await sqs.GetQueueAttributesAsync(new GetQueueAttributesRequest { QueueUrl = queueUrl, AttributeNames = ["All"] }, Ct)).Attributes!;
        Assert.Equal("true", attributes["FifoQueue"]);
        Assert.Contains(SnsSqsNames.FifoDeadLetterQueue(sub), attributes["RedrivePolicy"], StringComparison.Ordinal);

        // A publisher that knows nothing of the ordered subscription (and provisions the topic itself) publishes to the FIFO topic.
        await using var publisher = Transport();
        await publisher.ProvisionAsync(new MessagingTopology([topic], []), Ct);
        var keyed = Event("e-1", "customer 42"); // a space: not a valid group id, mapped
        await publisher.PublishAsync(topic, [keyed, Event("e-2", null), Event("e-1", "customer 42")], Ct); // e-1 twice: deduplicated

        var received = new List<Message>();
        await Wait.UntilAsync(async () =>
        {
            var response = await sqs.ReceiveMessageAsync(new ReceiveMessageRequest
            {
                QueueUrl = queueUrl, MaxNumberOfMessages = 10, WaitTimeSeconds = 1, MessageSystemAttributeNames = ["All"],
            }, Ct);
            foreach (var m in response.Messages ?? [])
            {
                received.Add(m);
                await sqs.DeleteMessageAsync(queueUrl, m.ReceiptHandle, Ct);
            }
            return received.Count;
        }, count => count >= 2, "both events arrive in the FIFO queue");
        Assert.Equal(2, received.Count);
        var first = received.Single(m => m.Attributes["MessageDeduplicationId"] == "e-1");
        Assert.Equal(SnsSqsNames.FifoId("customer 42"), first.Attributes["MessageGroupId"]);
        Assert.StartsWith("sha256-", first.Attributes["MessageGroupId"], StringComparison.Ordinal);
        var keyless = received.Single(m => m.Attributes["MessageDeduplicationId"] == "e-2");
        Assert.Equal("e-2", keyless.Attributes["MessageGroupId"]); // a group of its own
        await fixture.DeleteSubscriptionAsync(topic, sub);
    }

    [Fact(Timeout = 60_000)]
    public async Task An_ordered_subscription_on_a_standard_topic_with_subscriptions_fails_naming_the_setting()
    {
        fixture.RequireBroker();
        var (topic, sub) = Names();
        await using (var standard = Transport())
        {
            await standard.ProvisionAsync(new MessagingTopology([topic], [Subscription(sub + "-plain", topic, ordered: false)]), Ct);
        }

        await using var ordered = Transport();
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            ordered.ProvisionAsync(new MessagingTopology([topic], [Subscription(sub, topic, ordered: true)]), Ct));
        Assert.Contains($"Messaging:Subscriptions:{sub}:Ordered", error.Message, StringComparison.Ordinal);
        Assert.Contains(SnsSqsNames.Topic(topic), error.Message, StringComparison.Ordinal);

        await using var listed = Transport(o => o.FifoTopics.Add(topic));
        var setting = await Assert.ThrowsAsync<InvalidOperationException>(() => listed.ProvisionAsync(new MessagingTopology([topic], []), Ct));
        Assert.Contains("Messaging:SnsSqs:FifoTopics", setting.Message, StringComparison.Ordinal);
        await fixture.DeleteSubscriptionAsync(topic, sub);
        await fixture.DeleteSubscriptionAsync(topic, sub + "-plain");
    }
}
