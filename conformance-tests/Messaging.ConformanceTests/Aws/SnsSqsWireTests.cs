using System.Text;
using System.Text.Json;
using Amazon.SQS.Model;
using CloudNative.CloudEvents;
using Messaging.Aws;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.ConformanceTests.Transports;
using Messaging.DeadLetters;
using Messaging.Policy;
using Messaging.Topology;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace Messaging.ConformanceTests.Aws;

/// <summary>The SNS/SQS topology and wire mapping as seen with the plain SQS client, and behaviour the shared suite does not reach.</summary>
public sealed class SnsSqsWireTests(AwsFixture fixture) : IClassFixture<AwsFixture>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static (string Topic, string Subscription) Names()
    {
        var id = Guid.NewGuid().ToString("N")[..10];
        return ($"wire-{id}", $"wire-{id}-s");
    }

    private SnsSqsTransport Transport(IReadOnlyList<CloudEventAttribute>? extensions = null) =>
        new(fixture.Options, extensions ?? [], NullLoggerFactory.Instance);

    private async Task<Message> ReceiveOneAsync(string queue)
    {
        var url = (await fixture.Clients.Sqs.GetQueueUrlAsync(queue, Ct)).QueueUrl;
        var response = await Wait.UntilAsync(() => fixture.Clients.Sqs.ReceiveMessageAsync(new ReceiveMessageRequest
        {
            QueueUrl = url,
            MaxNumberOfMessages = 1,
            WaitTimeSeconds = 1,
            MessageAttributeNames = ["All"],
            MessageSystemAttributeNames = ["All"],
        }, Ct), r => r.Messages is { Count: 1 }, $"a message arrives in {queue}");
        return response.Messages![0];
    }

    private static SubscriptionDefinition Subscription(string name, string topic, int maxAttempts = 3) => new()
    {
        Name = name,
        Topic = topic,
        Retry = new RetryPolicy(maxAttempts, Backoff.Fixed(TimeSpan.FromMilliseconds(100))),
    };

    [Fact(Timeout = 60_000)]
    public async Task Provisioning_creates_the_documented_topology_and_is_idempotent()
    {
        fixture.RequireBroker();
        var (topic, sub) = Names();
        await using var transport = Transport();
        var topology = new MessagingTopology([topic], [Subscription(sub, topic, maxAttempts: 4)]);
        await transport.ProvisionAsync(topology, Ct);
        await transport.ProvisionAsync(topology, Ct); // again: converges, no error

        var sqs = fixture.Clients.Sqs;
        var queueUrl = (await sqs.GetQueueUrlAsync(SnsSqsNames.Queue(sub), Ct)).QueueUrl;
        var deadLetterUrl = (await sqs.GetQueueUrlAsync(SnsSqsNames.DeadLetterQueue(sub), Ct)).QueueUrl;
        var attributes = (await sqs.GetQueueAttributesAsync(new GetQueueAttributesRequest { QueueUrl = queueUrl, AttributeNames = ["All"] }, Ct)).Attributes!;
        var deadLetterArn = (await sqs.GetQueueAttributesAsync(new GetQueueAttributesRequest { QueueUrl = deadLetterUrl, AttributeNames = ["QueueArn"] }, Ct)).Attributes!["QueueArn"];

        using var redrive = JsonDocument.Parse(attributes["RedrivePolicy"]);
        Assert.Equal(deadLetterArn, redrive.RootElement.GetProperty("deadLetterTargetArn").GetString());
        Assert.Equal("9", redrive.RootElement.GetProperty("maxReceiveCount").ToString()); // MaxAttempts 4 + allowance 5
        Assert.Equal("5", attributes["VisibilityTimeout"]);
        using var policy = JsonDocument.Parse(attributes["Policy"]);
        var statement = policy.RootElement.GetProperty("Statement")[0];
        Assert.Equal("sqs:SendMessage", statement.GetProperty("Action").GetString());
        Assert.Equal("sns.amazonaws.com", statement.GetProperty("Principal").GetProperty("Service").GetString());
        Assert.EndsWith(":" + SnsSqsNames.Topic(topic), statement.GetProperty("Condition").GetProperty("ArnEquals").GetProperty("aws:SourceArn").GetString(), StringComparison.Ordinal);
        await fixture.DeleteSubscriptionAsync(topic, sub);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_published_event_arrives_raw_in_binary_mode_with_ce_attributes()
    {
        fixture.RequireBroker();
        var (topic, sub) = Names();
        await using var transport = Transport();
        await transport.ProvisionAsync(new MessagingTopology([topic], [Subscription(sub, topic)]), Ct);
        var sent = new CloudEvent
        {
            Id = "wire-1", Source = new Uri("urn:wire"), Type = "com.example.wire", Subject = "subj",
            DataContentType = "application/json", Data = Encoding.UTF8.GetBytes("{\"n\":1}"),
        };
        await transport.PublishAsync(topic, [sent], Ct);

        var message = await ReceiveOneAsync(SnsSqsNames.Queue(sub));
        Assert.Equal("{\"n\":1}", message.Body); // raw delivery: no SNS envelope
        var attributes = message.MessageAttributes!;
        Assert.Equal("1.0", attributes["ce_specversion"].StringValue);
        Assert.Equal("wire-1", attributes["ce_id"].StringValue);
        Assert.Equal("urn:wire", attributes["ce_source"].StringValue);
        Assert.Equal("com.example.wire", attributes["ce_type"].StringValue);
        Assert.Equal("subj", attributes["ce_subject"].StringValue);
        Assert.Equal("application/json", attributes["content-type"].StringValue);
        Assert.All(attributes.Values, v => Assert.Equal("String", v.DataType));
        await fixture.DeleteSubscriptionAsync(topic, sub);
    }

    [Fact(Timeout = 60_000)]
    public async Task An_event_needing_more_than_nine_attributes_arrives_in_structured_mode()
    {
        fixture.RequireBroker();
        var (topic, sub) = Names();
        var extensions = Enumerable.Range(0, 7).Select(i => CloudEventAttribute.CreateExtension($"ext{i}", CloudEventAttributeType.String)).ToList();
        await using var transport = Transport(extensions);
        await transport.ProvisionAsync(new MessagingTopology([topic], [Subscription(sub, topic)]), Ct);
        var sent = new CloudEvent(CloudEventsSpecVersion.V1_0, extensions) { Id = "wide", Source = new Uri("urn:wire"), Type = "t" };
        foreach (var ext in extensions)
        {
            sent[ext] = "v";
        }
        await transport.PublishAsync(topic, [sent], Ct);

        var message = await ReceiveOneAsync(SnsSqsNames.Queue(sub));
        var attribute = Assert.Single(message.MessageAttributes!);
        Assert.Equal(("content-type", "application/cloudevents+json; charset=utf-8"), (attribute.Key, attribute.Value.StringValue));
        using var body = JsonDocument.Parse(message.Body);
        Assert.Equal("wide", body.RootElement.GetProperty("id").GetString());
        Assert.Equal("v", body.RootElement.GetProperty("ext6").GetString());
        await fixture.DeleteSubscriptionAsync(topic, sub);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_dead_letter_keeps_body_and_attributes_and_adds_one_metadata_attribute()
    {
        fixture.RequireBroker();
        var (topic, sub) = Names();
        var probe = new Probe { Behaviour = (c, _) => { c.Reject("not wanted"); return Task.CompletedTask; } };
        await using var host = await ConformanceHost.StartAsync(fixture, probe, m => m.AddSubscription(sub, topic, s => s.HandleCloudEvents<ProbeHandler>()));
        var sent = new CloudEvent { Id = "dl-1", Source = new Uri("urn:wire"), Type = "t", DataContentType = "text/plain", Data = Encoding.UTF8.GetBytes("body") };
        await host.Publisher.PublishAsync(topic, sent, Ct);
        await Wait.UntilAsync(() => probe.Attempts.Count == 1, "the event is rejected");
        await host.StopAsync();

        var message = await ReceiveOneAsync(SnsSqsNames.DeadLetterQueue(sub));
        Assert.Equal("body", message.Body);
        Assert.Equal("dl-1", message.MessageAttributes!["ce_id"].StringValue);
        Assert.Equal("text/plain", message.MessageAttributes["content-type"].StringValue);
        var metadata = JsonSerializer.Deserialize<Dictionary<string, string>>(message.MessageAttributes[SnsSqsCodec.DeadLetterMetadataAttribute].StringValue!)!;
        Assert.Equal(nameof(DeadLetterReason.Rejected), metadata[DeadLetterMetadata.PropertyNames.Reason]);
        Assert.Equal("not wanted", metadata[DeadLetterMetadata.PropertyNames.Description]);
        Assert.Equal("1", metadata[DeadLetterMetadata.PropertyNames.AttemptCount]);
        Assert.Equal(sub, metadata[DeadLetterMetadata.PropertyNames.SourceSubscription]);
        await fixture.DeleteSubscriptionAsync(topic, sub);
    }

    [Fact(Timeout = 120_000)]
    public async Task A_handler_running_longer_than_the_visibility_timeout_keeps_its_message()
    {
        fixture.RequireBroker();
        var (topic, sub) = Names();
        // 10 s rather than the fixture's 5 s: extended every ~3.3 s, so only a stall of several seconds on a loaded machine
        // could let it lapse, while the handler still holds the message for two and a half of them.
        var visibility = TimeSpan.FromSeconds(10);
        var hold = visibility * 2.5;
        var probe = new Probe { Behaviour = (_, ct) => Task.Delay(hold, ct) };
        await using var host = await ConformanceHost.StartAsync(fixture, probe, m => m.AddSubscription(sub, topic, s => s.HandleCloudEvents<ProbeHandler>()),
            services => services.PostConfigure<SnsSqsTransportOptions>(o =>
            {
                o.VisibilityTimeout = visibility;
                // Short polls: as on SQS, a long poll the stop cancels lives on at the endpoint until its wait time ends and
                // takes given-back messages for nobody (a known limitation); this case is about what the stop hands back.
                o.WaitTimeSeconds = 0;
            }));
        var url = (await fixture.Clients.Sqs.GetQueueUrlAsync(SnsSqsNames.Queue(sub), Ct)).QueueUrl;
        var attributes = (await fixture.Clients.Sqs.GetQueueAttributesAsync(new GetQueueAttributesRequest { QueueUrl = url, AttributeNames = ["VisibilityTimeout"] }, Ct)).Attributes!;
        Assert.Equal("10", attributes["VisibilityTimeout"]);
        var sent = new CloudEvent { Id = "slow-1", Source = new Uri("urn:wire"), Type = "t" };
        await host.Publisher.PublishAsync(topic, sent, Ct);
        await Wait.UntilAsync(() => probe.Handled.Count == 1, "the slow handler finishes", hold + TimeSpan.FromSeconds(40));
        // Without visibility extensions the message would have been received again (attempt 2) while the handler ran.
        Assert.Single(probe.Attempts);
        Assert.Equal(1, probe.Attempts.Single().Attempt);
        await Wait.StaysAsync(() => probe.Attempts.Count == 1, "no redelivery after completion", TimeSpan.FromSeconds(1));
        await fixture.DeleteSubscriptionAsync(topic, sub);
    }

    [Fact(Timeout = 60_000)]
    public async Task The_redrive_policy_moves_a_message_whose_consumers_keep_crashing_and_it_reads_back_as_delivery_limit()
    {
        fixture.RequireBroker();
        var (topic, sub) = Names();
        await using var transport = Transport();
        var subscription = Subscription(sub, topic, maxAttempts: 1);
        await transport.ProvisionAsync(new MessagingTopology([topic], [subscription]), Ct);
        await transport.PublishAsync(topic, [new CloudEvent { Id = "crashy", Source = new Uri("urn:wire"), Type = "t" }], Ct);
        var url = (await fixture.Clients.Sqs.GetQueueUrlAsync(SnsSqsNames.Queue(sub), Ct)).QueueUrl;
        // Each receive that is never settled is a crashed consumer; visibility 0 makes the message come straight back.
        var receives = 0;
        await Wait.UntilAsync(async () =>
        {
            var response = await fixture.Clients.Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, VisibilityTimeout = 0, WaitTimeSeconds = 0 }, Ct);
            receives += response.Messages?.Count ?? 0;
            return (await transport.DeadLetters.PeekAsync(sub, 10, Ct)).Count;
        }, count => count == 1, "the redrive policy moves the message");
        Assert.Equal(transport.MaxReceiveCount(subscription), receives);
        var letter = Assert.Single(await transport.DeadLetters.PeekAsync(sub, 10, Ct));
        Assert.Equal(DeadLetterReason.DeliveryLimitExceeded, letter.Metadata.Reason);
        Assert.Equal("crashy", letter.Event!.Id);
        await fixture.DeleteSubscriptionAsync(topic, sub);
    }

    [Fact(Timeout = 60_000)]
    public async Task Graceful_stop_hands_back_received_but_unstarted_messages_at_once()
    {
        fixture.RequireBroker();
        var (topic, sub) = Names();
        var started = 0;
        var probe = new Probe { Behaviour = async (_, ct) => { Interlocked.Increment(ref started); await Task.Delay(300, ct); } };
        // A 30 s visibility timeout (the transport's default): a message the stop kept instead of handing back stays invisible
        // far longer than the short look below, even if it was received (or last extended) some seconds before the stop.
        var visibility = TimeSpan.FromSeconds(30);
        var host = await ConformanceHost.StartAsync(fixture, probe,
            m => m.AddSubscription(sub, topic, s => s.HandleCloudEvents<ProbeHandler>().WithConcurrency(1).WithPrefetch(9)),
            services => services.PostConfigure<SnsSqsTransportOptions>(o => o.VisibilityTimeout = visibility));
        await host.Publisher.PublishBatchAsync(topic, Enumerable.Range(0, 10).Select(i => new CloudEvent { Id = $"g-{i}", Source = new Uri("urn:wire"), Type = "t" }), Ct);
        await Wait.UntilAsync(() => Volatile.Read(ref started) >= 1, "a handler started");
        await host.StopAsync();
        await host.DisposeAsync();
        var left = 10 - probe.Handled.Count;
        Assert.True(left > 0, "the stop came before every event was handled");

        // Messages still held would stay invisible for the whole visibility timeout; handed back, they are there at once. The
        // look lasts up to 15 s (half the timeout, so a loaded machine cannot pass for a held message) rather than one receive: as on SQS, the stopped host's cancelled long
        // poll lives on at the endpoint and can take given-back messages for nobody before they are looked for.
        var url = (await fixture.Clients.Sqs.GetQueueUrlAsync(SnsSqsNames.Queue(sub), Ct)).QueueUrl;
        await Wait.UntilAsync(
            () => fixture.Clients.Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, MaxNumberOfMessages = 10, WaitTimeSeconds = 0 }, Ct),
            response => response.Messages is { Count: > 0 }, "a given-back message is visible", TimeSpan.FromSeconds(15));
        await fixture.DeleteSubscriptionAsync(topic, sub);
    }

    [Fact(Timeout = 60_000)]
    public async Task With_raw_delivery_turned_off_events_arrive_in_SNS_envelopes_and_still_decode()
    {
        fixture.RequireBroker();
        var (topic, sub) = Names();
        await using var transport = Transport();
        await transport.ProvisionAsync(new MessagingTopology([topic], [Subscription(sub, topic)]), Ct);
        var sns = fixture.Clients.Sns;
        var topicArn = await sns.CreateTopicAsync(SnsSqsNames.Topic(topic), Ct);
        var queueUrl = (await fixture.Clients.Sqs.GetQueueUrlAsync(SnsSqsNames.Queue(sub), Ct)).QueueUrl;
        var queueArn = (await fixture.Clients.Sqs.GetQueueAttributesAsync(new GetQueueAttributesRequest { QueueUrl = queueUrl, AttributeNames = ["QueueArn"] }, Ct)).Attributes!["QueueArn"];
        var subscriptionArn = await sns.SubscribeQueueAsync(topicArn, queueArn, rawMessageDelivery: null, Ct); // the existing subscription
        await sns.SetSubscriptionAttributeAsync(subscriptionArn, "RawMessageDelivery", "false", Ct);

        var text = new CloudEvent { Id = "env-text", Source = new Uri("urn:wire"), Type = "t", DataContentType = "text/plain", Data = Encoding.UTF8.GetBytes("in an envelope") };
        var binary = new CloudEvent { Id = "env-binary", Source = new Uri("urn:wire"), Type = "t", DataContentType = "application/octet-stream", Data = new byte[] { 0, 1, 255 } };
        await transport.PublishAsync(topic, [text, binary], Ct);

        var decoded = new List<CloudEvent>();
        for (var i = 0; i < 2; i++)
        {
            var message = await ReceiveOneAsync(SnsSqsNames.Queue(sub));
            using (var envelope = JsonDocument.Parse(message.Body))
            {
                Assert.Equal("Notification", envelope.RootElement.GetProperty("Type").GetString());
                Assert.Equal(topicArn, envelope.RootElement.GetProperty("TopicArn").GetString());
            }
            decoded.Add(transport.Codec.Decode(message.Body, []));
            await fixture.Clients.Sqs.DeleteMessageAsync(queueUrl, message.ReceiptHandle, Ct);
        }
        Assert.Equal("in an envelope", Encoding.UTF8.GetString((byte[])decoded.Single(e => e.Id == "env-text").Data!));
        Assert.Equal("text/plain", decoded.Single(e => e.Id == "env-text").DataContentType);
        Assert.Equal(new byte[] { 0, 1, 255 }, (byte[])decoded.Single(e => e.Id == "env-binary").Data!);
        await fixture.DeleteSubscriptionAsync(topic, sub);
    }

    [Fact(Timeout = 60_000)]
    public async Task An_SNS_notification_envelope_in_the_queue_is_unwrapped()
    {
        fixture.RequireBroker();
        var (topic, sub) = Names();
        var probe = new Probe();
        await using var host = await ConformanceHost.StartAsync(fixture, probe, m => m.AddSubscription(sub, topic, s => s.HandleCloudEvents<ProbeHandler>()));
        // What SNS delivers to a subscription whose raw message delivery is off.
        var envelope = JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["Type"] = "Notification",
            ["MessageId"] = Guid.NewGuid().ToString(),
            ["TopicArn"] = "arn:aws:sns:us-east-1:000000000000:" + topic,
            ["Message"] = "enveloped",
            ["Timestamp"] = "2026-11-27T10:00:00.000Z",
            ["MessageAttributes"] = new Dictionary<string, object>
            {
                ["ce_specversion"] = new { Type = "String", Value = "1.0" },
                ["ce_id"] = new { Type = "String", Value = "env-1" },
                ["ce_source"] = new { Type = "String", Value = "urn:env" },
                ["ce_type"] = new { Type = "String", Value = "t" },
            },
        });
        var url = (await fixture.Clients.Sqs.GetQueueUrlAsync(SnsSqsNames.Queue(sub), Ct)).QueueUrl;
        await fixture.Clients.Sqs.SendMessageAsync(url, envelope, Ct);
        await Wait.UntilAsync(() => probe.Handled.Count == 1, "the enveloped event is handled");
        Assert.Equal("env-1", probe.Handled.Single().Event.Id);
        Assert.Equal("enveloped", Encoding.UTF8.GetString((byte[])probe.Handled.Single().Event.Data!));
        await fixture.DeleteSubscriptionAsync(topic, sub);
    }

    [Fact(Timeout = 60_000)]
    public async Task Without_provisioning_a_missing_queue_is_a_clear_error()
    {
        fixture.RequireBroker();
        var (topic, sub) = Names();
        var host = ConformanceHost.Build(fixture, new Probe(), m => m.AddSubscription(sub, topic, s => s.HandleCloudEvents<ProbeHandler>()),
            settings: new Dictionary<string, string?> { ["Messaging:Provisioning"] = "false" });
        try
        {
            var error = await Assert.ThrowsAsync<InvalidOperationException>(() => host.StartAsync(Ct));
            Assert.Contains(SnsSqsNames.Queue(sub), error.Message, StringComparison.Ordinal);
            Assert.Contains("Messaging:Provisioning", error.Message, StringComparison.Ordinal);
        }
        finally
        {
            host.Dispose();
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task Publishing_to_a_topic_that_does_not_exist_names_it()
    {
        fixture.RequireBroker();
        var (topic, sub) = Names();
        await using var transport = Transport();
        await transport.ProvisionAsync(new MessagingTopology([topic], []), Ct);
        var missing = "missing-" + Guid.NewGuid().ToString("N")[..8];
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            transport.PublishAsync(missing, [new CloudEvent { Id = "x", Source = new Uri("urn:x"), Type = "t" }], Ct));
        Assert.Contains(missing, error.Message, StringComparison.Ordinal);
        Assert.Contains("Messaging:Provisioning", error.Message, StringComparison.Ordinal);
        await fixture.DeleteSubscriptionAsync(topic, sub);
    }
}
