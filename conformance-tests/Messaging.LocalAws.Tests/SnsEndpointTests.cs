using System.Net;
using System.Text.Json;
using Amazon.SQS.Model;

namespace Messaging.LocalAws.Tests;

public sealed class SnsEndpointTests : LocalAwsTestBase
{
    /// <summary>A queue whose policy lets every topic of the account send to it, as SNS delivery requires.</summary>
    private async Task<(string Url, string Arn)> CreateQueueAsync(string name, string sourceArnPattern = "arn:aws:sns:us-east-1:000000000000:*", bool withPolicy = true)
    {
        var url = (await Sqs.CreateQueueAsync(name, Cancellation)).QueueUrl;
        var arn = (await Sqs.GetQueueAttributesAsync(url, ["QueueArn"], Cancellation)).Attributes["QueueArn"];
        if (withPolicy)
        {
            await Sqs.SetQueueAttributesAsync(url, new() { ["Policy"] = TopicPolicy(arn, sourceArnPattern) }, Cancellation);
        }

        return (url, arn);
    }

    internal static string TopicPolicy(string queueArn, string sourceArnPattern) => JsonSerializer.Serialize(new
    {
        Version = "2012-10-17",
        Statement = new[]
        {
            new
            {
                Effect = "Allow",
                Principal = new { Service = "sns.amazonaws.com" },
                Action = "sqs:SendMessage",
                Resource = queueArn,
                Condition = new { ArnLike = new Dictionary<string, string> { ["aws:SourceArn"] = sourceArnPattern } },
            },
        },
    });

    private async Task<Message> ReceiveOneAsync(string queueUrl) =>
        Assert.Single((await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest
        {
            QueueUrl = queueUrl,
            WaitTimeSeconds = 5,
            MessageAttributeNames = ["All"],
        }, Cancellation)).Messages);

    private static List<KeyValuePair<string, string>> Attribute(int index, string name, string type, string value, string valueField = "StringValue") =>
    [
        new($"MessageAttributes.entry.{index}.Name", name),
        new($"MessageAttributes.entry.{index}.Value.DataType", type),
        new($"MessageAttributes.entry.{index}.Value.{valueField}", value),
    ];

    [Fact]
    public async Task CreateTopic_is_idempotent_and_names_the_documented_arn()
    {
        var arn = await Sns.CreateTopicAsync("events", Cancellation);

        Assert.Equal("arn:aws:sns:us-east-1:000000000000:events", arn);
        Assert.Equal(arn, await Sns.CreateTopicAsync("events", Cancellation));
        var listed = await Sns.SendAsync("ListTopics", [], cancellationToken: Cancellation);
        Assert.Equal(arn, listed.Ok().Value("TopicArn"));
    }

    [Fact]
    public async Task Publish_fans_out_to_a_raw_and_an_enveloped_subscription()
    {
        var topicArn = await Sns.CreateTopicAsync("fan-out", Cancellation);
        var raw = await CreateQueueAsync("raw-subscriber");
        var wrapped = await CreateQueueAsync("wrapped-subscriber");
        await Sns.SubscribeAsync(topicArn, raw.Arn, raw: true, Cancellation);
        var wrappedSubscription = await Sns.SubscribeAsync(topicArn, wrapped.Arn, raw: false, Cancellation);

        var published = await Sns.SendAsync("Publish",
        [
            new("TopicArn", topicArn), new("Message", "{\"hello\":\"wörld\"}"), new("Subject", "greeting"),
            .. Attribute(1, "ce-type", "String", "com.example.greeted"),
            .. Attribute(2, "ce-count", "Number", "3"),
            .. Attribute(3, "ce-blob", "Binary", Convert.ToBase64String([1, 2, 3]), "BinaryValue"),
        ], cancellationToken: Cancellation);
        var messageId = published.Ok().Value("MessageId");

        // Raw: the body verbatim, SNS attributes as SQS attributes (the SDK verifies their digest).
        var rawMessage = await ReceiveOneAsync(raw.Url);
        Assert.Equal("{\"hello\":\"wörld\"}", rawMessage.Body);
        Assert.Equal("com.example.greeted", rawMessage.MessageAttributes["ce-type"].StringValue);
        Assert.Equal("Number", rawMessage.MessageAttributes["ce-count"].DataType);
        Assert.Equal(new byte[] { 1, 2, 3 }, rawMessage.MessageAttributes["ce-blob"].BinaryValue.ToArray());

        // Not raw: the JSON notification envelope, and no SQS message attributes.
        var wrappedMessage = await ReceiveOneAsync(wrapped.Url);
        Assert.True(wrappedMessage.MessageAttributes is null || wrappedMessage.MessageAttributes.Count == 0);
        using var envelope = JsonDocument.Parse(wrappedMessage.Body);
        var root = envelope.RootElement;
        Assert.Equal("Notification", root.GetProperty("Type").GetString());
        Assert.Equal(messageId, root.GetProperty("MessageId").GetString());
        Assert.Equal(topicArn, root.GetProperty("TopicArn").GetString());
        Assert.Equal("greeting", root.GetProperty("Subject").GetString());
        Assert.Equal("{\"hello\":\"wörld\"}", root.GetProperty("Message").GetString());
        Assert.True(DateTimeOffset.TryParse(root.GetProperty("Timestamp").GetString(), System.Globalization.CultureInfo.InvariantCulture, out _));
        Assert.Equal("1", root.GetProperty("SignatureVersion").GetString());
        Assert.False(string.IsNullOrEmpty(root.GetProperty("Signature").GetString()));
        Assert.False(string.IsNullOrEmpty(root.GetProperty("SigningCertURL").GetString()));
        Assert.Contains(Uri.EscapeDataString(wrappedSubscription), root.GetProperty("UnsubscribeURL").GetString(), StringComparison.Ordinal);
        var attributes = root.GetProperty("MessageAttributes");
        Assert.Equal("String", attributes.GetProperty("ce-type").GetProperty("Type").GetString());
        Assert.Equal("com.example.greeted", attributes.GetProperty("ce-type").GetProperty("Value").GetString());
        Assert.Equal("Binary", attributes.GetProperty("ce-blob").GetProperty("Type").GetString());
        Assert.Equal(Convert.ToBase64String([1, 2, 3]), attributes.GetProperty("ce-blob").GetProperty("Value").GetString());
    }

    [Fact]
    public async Task Raw_delivery_discards_messages_with_more_than_ten_attributes()
    {
        var topicArn = await Sns.CreateTopicAsync("many-attributes", Cancellation);
        var raw = await CreateQueueAsync("raw-many");
        var wrapped = await CreateQueueAsync("wrapped-many");
        await Sns.SubscribeAsync(topicArn, raw.Arn, raw: true, Cancellation);
        await Sns.SubscribeAsync(topicArn, wrapped.Arn, raw: false, Cancellation);
        var parameters = new List<KeyValuePair<string, string>> { new("TopicArn", topicArn), new("Message", "eleven") };
        for (var index = 1; index <= 11; index++)
        {
            parameters.AddRange(Attribute(index, $"a{index}", "String", "v"));
        }

        (await Sns.SendAsync("Publish", parameters, cancellationToken: Cancellation)).Ok();

        // The enveloped copy arrives; by then the raw copy has been dealt with as well (delivery is synchronous).
        using var envelope = JsonDocument.Parse((await ReceiveOneAsync(wrapped.Url)).Body);
        Assert.Equal(11, envelope.RootElement.GetProperty("MessageAttributes").EnumerateObject().Count());
        var rawAttributes = (await Sqs.GetQueueAttributesAsync(raw.Url, ["All"], Cancellation)).Attributes;
        Assert.Equal("0", rawAttributes["ApproximateNumberOfMessages"]);
        Assert.Equal("0", rawAttributes["ApproximateNumberOfMessagesNotVisible"]);
        Assert.Contains(Logs.Messages, line => line.StartsWith("Warning:", StringComparison.Ordinal) && line.Contains("11 message attributes", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Subscribing_the_same_queue_twice_returns_the_same_subscription()
    {
        var topicArn = await Sns.CreateTopicAsync("twice", Cancellation);
        var queue = await CreateQueueAsync("twice-queue");

        var first = await Sns.SubscribeAsync(topicArn, queue.Arn, raw: true, Cancellation);
        var second = await Sns.SubscribeAsync(topicArn, queue.Arn, raw: true, Cancellation);

        Assert.Equal(first, second);
        Assert.StartsWith(topicArn + ":", first, StringComparison.Ordinal);
        var conflicting = await Sns.SendAsync("Subscribe",
        [
            new("TopicArn", topicArn), new("Protocol", "sqs"), new("Endpoint", queue.Arn),
            new("Attributes.entry.1.key", "RawMessageDelivery"), new("Attributes.entry.1.value", "false"),
        ], cancellationToken: Cancellation);
        Assert.Equal("InvalidParameter", conflicting.ErrorCode);
        var listed = await Sns.SendAsync("ListSubscriptionsByTopic", [new("TopicArn", topicArn)], cancellationToken: Cancellation);
        Assert.Single(listed.Ok().Root.Descendants(SnsQueryClient.Ns + "member"));
    }

    [Fact]
    public async Task Subscription_attributes_can_be_read_and_changed()
    {
        var topicArn = await Sns.CreateTopicAsync("attributes", Cancellation);
        var queue = await CreateQueueAsync("attributes-queue");
        var subscription = await Sns.SubscribeAsync(topicArn, queue.Arn, raw: false, Cancellation);

        (await Sns.SendAsync("SetSubscriptionAttributes",
            [new("SubscriptionArn", subscription), new("AttributeName", "RawMessageDelivery"), new("AttributeValue", "true")],
            cancellationToken: Cancellation)).Ok();
        var filter = await Sns.SendAsync("SetSubscriptionAttributes",
            [new("SubscriptionArn", subscription), new("AttributeName", "FilterPolicy"), new("AttributeValue", "{\"a\":[\"b\"]}")],
            cancellationToken: Cancellation);

        var attributes = (await Sns.SendAsync("GetSubscriptionAttributes", [new("SubscriptionArn", subscription)], cancellationToken: Cancellation)).Ok();
        var entries = attributes.Root.Descendants(SnsQueryClient.Ns + "entry")
            .ToDictionary(entry => entry.Element(SnsQueryClient.Ns + "key")!.Value, entry => entry.Element(SnsQueryClient.Ns + "value")!.Value);
        Assert.Equal("true", entries["RawMessageDelivery"]);
        Assert.Equal(queue.Arn, entries["Endpoint"]);
        Assert.Equal("sqs", entries["Protocol"]);
        Assert.Equal(HttpStatusCode.BadRequest, filter.StatusCode);
        Assert.Equal("InvalidParameter", filter.ErrorCode);
    }

    [Fact]
    public async Task Unsubscribed_queue_no_longer_receives()
    {
        var topicArn = await Sns.CreateTopicAsync("unsubscribe", Cancellation);
        var queue = await CreateQueueAsync("unsubscribe-queue");
        var subscription = await Sns.SubscribeAsync(topicArn, queue.Arn, raw: true, Cancellation);

        (await Sns.SendAsync("Unsubscribe", [new("SubscriptionArn", subscription)], cancellationToken: Cancellation)).Ok();
        (await Sns.SendAsync("Publish", [new("TopicArn", topicArn), new("Message", "nobody")], cancellationToken: Cancellation)).Ok();

        Assert.Equal("0", (await Sqs.GetQueueAttributesAsync(queue.Url, ["ApproximateNumberOfMessages"], Cancellation)).Attributes["ApproximateNumberOfMessages"]);
        var again = await Sns.SendAsync("Unsubscribe", [new("SubscriptionArn", subscription)], cancellationToken: Cancellation);
        Assert.Equal("NotFound", again.ErrorCode);
    }

    [Fact]
    public async Task PublishBatch_reports_successful_and_failed_entries()
    {
        var topicArn = await Sns.CreateTopicAsync("batch", Cancellation);
        var queue = await CreateQueueAsync("batch-queue");
        await Sns.SubscribeAsync(topicArn, queue.Arn, raw: true, Cancellation);

        var response = (await Sns.SendAsync("PublishBatch",
        [
            new("TopicArn", topicArn),
            new("PublishBatchRequestEntries.member.1.Id", "one"),
            new("PublishBatchRequestEntries.member.1.Message", "first"),
            new("PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Name", "k"),
            new("PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Value.DataType", "String"),
            new("PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Value.StringValue", "v"),
            new("PublishBatchRequestEntries.member.2.Id", "two"),
            new("PublishBatchRequestEntries.member.2.Message", ""),
            new("PublishBatchRequestEntries.member.3.Id", "three"),
            new("PublishBatchRequestEntries.member.3.Message", "third"),
        ], cancellationToken: Cancellation)).Ok();

        var successful = response.Root.Descendants(SnsQueryClient.Ns + "Successful").Single().Elements(SnsQueryClient.Ns + "member").ToList();
        var failed = Assert.Single(response.Root.Descendants(SnsQueryClient.Ns + "Failed").Single().Elements(SnsQueryClient.Ns + "member"));
        Assert.Equal(["one", "three"], successful.Select(member => member.Element(SnsQueryClient.Ns + "Id")!.Value));
        Assert.All(successful, member => Assert.False(string.IsNullOrEmpty(member.Element(SnsQueryClient.Ns + "MessageId")!.Value)));
        Assert.Equal("two", failed.Element(SnsQueryClient.Ns + "Id")!.Value);
        Assert.Equal("InvalidParameter", failed.Element(SnsQueryClient.Ns + "Code")!.Value);
        Assert.Equal("true", failed.Element(SnsQueryClient.Ns + "SenderFault")!.Value);

        var received = await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = queue.Url, MaxNumberOfMessages = 10, MessageAttributeNames = ["All"] }, Cancellation);
        Assert.Equal(["first", "third"], received.Messages.Select(message => message.Body).Order(StringComparer.Ordinal));
        Assert.Equal("v", received.Messages.Single(message => message.Body == "first").MessageAttributes["k"].StringValue);
    }

    [Fact]
    public async Task PublishBatch_refuses_more_than_ten_entries_and_duplicate_ids()
    {
        var topicArn = await Sns.CreateTopicAsync("batch-rules", Cancellation);
        var eleven = new List<KeyValuePair<string, string>> { new("TopicArn", topicArn) };
        for (var index = 1; index <= 11; index++)
        {
            eleven.Add(new($"PublishBatchRequestEntries.member.{index}.Id", $"e{index}"));
            eleven.Add(new($"PublishBatchRequestEntries.member.{index}.Message", "m"));
        }

        var tooMany = await Sns.SendAsync("PublishBatch", eleven, cancellationToken: Cancellation);
        var duplicate = await Sns.SendAsync("PublishBatch",
        [
            new("TopicArn", topicArn),
            new("PublishBatchRequestEntries.member.1.Id", "same"), new("PublishBatchRequestEntries.member.1.Message", "a"),
            new("PublishBatchRequestEntries.member.2.Id", "same"), new("PublishBatchRequestEntries.member.2.Message", "b"),
        ], cancellationToken: Cancellation);
        var empty = await Sns.SendAsync("PublishBatch", [new("TopicArn", topicArn)], cancellationToken: Cancellation);

        Assert.Equal(HttpStatusCode.BadRequest, tooMany.StatusCode);
        Assert.Equal("TooManyEntriesInBatchRequest", tooMany.ErrorCode);
        Assert.Equal("BatchEntryIdsNotDistinct", duplicate.ErrorCode);
        Assert.Equal("EmptyBatchRequest", empty.ErrorCode);
    }

    [Fact]
    public async Task Publish_validates_size_group_id_and_topic()
    {
        var topicArn = await Sns.CreateTopicAsync("limits", Cancellation);

        var tooLong = await Sns.SendAsync("Publish", [new("TopicArn", topicArn), new("Message", new string('x', 262_145))], cancellationToken: Cancellation);
        var fits = await Sns.SendAsync("Publish", [new("TopicArn", topicArn), new("Message", new string('x', 262_144))], cancellationToken: Cancellation);
        var groupId = await Sns.SendAsync("Publish", [new("TopicArn", topicArn), new("Message", "m"), new("MessageGroupId", "g")], cancellationToken: Cancellation);
        var missing = await Sns.SendAsync("Publish", [new("TopicArn", topicArn + "-missing"), new("Message", "m")], cancellationToken: Cancellation);
        var badAttribute = await Sns.SendAsync("Publish", [new("TopicArn", topicArn), new("Message", "m"), .. Attribute(1, "Amazon.x", "String", "v")], cancellationToken: Cancellation);

        Assert.Equal("InvalidParameter", tooLong.ErrorCode);
        Assert.Contains("Message too long", tooLong.Value("Message"), StringComparison.Ordinal);
        fits.Ok();
        Assert.Equal("InvalidParameter", groupId.ErrorCode);
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Equal("NotFound", missing.ErrorCode);
        Assert.Equal("InvalidParameterValue", badAttribute.ErrorCode);
    }

    [Fact]
    public async Task Requests_must_be_signed_for_sns()
    {
        var unsigned = await Sns.SendAsync("ListTopics", [], authorization: null, cancellationToken: Cancellation);
        var wrongService = await Sns.SendAsync("ListTopics", [], authorization: "sqs", cancellationToken: Cancellation);

        Assert.Equal(HttpStatusCode.Forbidden, unsigned.StatusCode);
        Assert.Equal("MissingAuthenticationToken", unsigned.ErrorCode);
        Assert.Equal(HttpStatusCode.Forbidden, wrongService.StatusCode);
        Assert.Equal("SignatureDoesNotMatch", wrongService.ErrorCode);
    }

    [Fact]
    public async Task Topic_attributes_and_deletion()
    {
        var topicArn = await Sns.CreateTopicAsync("deletable", Cancellation);
        (await Sns.SendAsync("SetTopicAttributes",
            [new("TopicArn", topicArn), new("AttributeName", "DisplayName"), new("AttributeValue", "Deletable")], cancellationToken: Cancellation)).Ok();
        var attributes = (await Sns.SendAsync("GetTopicAttributes", [new("TopicArn", topicArn)], cancellationToken: Cancellation)).Ok();
        Assert.Contains(attributes.Root.Descendants(SnsQueryClient.Ns + "entry"),
            entry => entry.Element(SnsQueryClient.Ns + "key")!.Value == "DisplayName" && entry.Element(SnsQueryClient.Ns + "value")!.Value == "Deletable");

        (await Sns.SendAsync("DeleteTopic", [new("TopicArn", topicArn)], cancellationToken: Cancellation)).Ok();
        (await Sns.SendAsync("DeleteTopic", [new("TopicArn", topicArn)], cancellationToken: Cancellation)).Ok();
        var gone = await Sns.SendAsync("GetTopicAttributes", [new("TopicArn", topicArn)], cancellationToken: Cancellation);
        Assert.Equal("NotFound", gone.ErrorCode);
    }

    [Fact]
    public async Task Outage_keeps_topics_and_subscriptions()
    {
        var topicArn = await Sns.CreateTopicAsync("survives", Cancellation);
        var queue = await CreateQueueAsync("survives-queue");
        await Sns.SubscribeAsync(topicArn, queue.Arn, raw: true, Cancellation);

        await Endpoint.StopListeningAsync(Cancellation);
        await Assert.ThrowsAsync<HttpRequestException>(() => Sns.SendAsync("ListTopics", [], cancellationToken: Cancellation));
        await Endpoint.StartListeningAsync(Cancellation);

        (await Sns.SendAsync("Publish", [new("TopicArn", topicArn), new("Message", "after the outage")], cancellationToken: Cancellation)).Ok();
        Assert.Equal("after the outage", (await ReceiveOneAsync(queue.Url)).Body);
    }

    [Fact]
    public async Task Delivery_needs_a_queue_policy_that_lets_the_topic_send()
    {
        var topicArn = await Sns.CreateTopicAsync("guarded", Cancellation);
        var open = await CreateQueueAsync("policy-open", sourceArnPattern: topicArn);
        var otherTopic = await CreateQueueAsync("policy-other-topic", sourceArnPattern: topicArn + "-other");
        var none = await CreateQueueAsync("policy-none", withPolicy: false);
        foreach (var queue in new[] { open, otherTopic, none })
        {
            await Sns.SubscribeAsync(topicArn, queue.Arn, raw: true, Cancellation);
        }

        (await Sns.SendAsync("Publish", [new("TopicArn", topicArn), new("Message", "guarded")], cancellationToken: Cancellation)).Ok();

        Assert.Equal("guarded", (await ReceiveOneAsync(open.Url)).Body);
        foreach (var queue in new[] { otherTopic, none })
        {
            var count = (await Sqs.GetQueueAttributesAsync(queue.Url, ["ApproximateNumberOfMessages"], Cancellation)).Attributes["ApproximateNumberOfMessages"];
            Assert.Equal("0", count);
        }

        Assert.Equal(2, Logs.Messages.Count(line => line.Contains("DeniedByQueuePolicy", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task Client_side_delivery_failures_go_to_the_subscription_dead_letter_queue()
    {
        var topicArn = await Sns.CreateTopicAsync("with-dlq", Cancellation);
        var deadLetter = await CreateQueueAsync("subscription-dlq");
        var refusing = await CreateQueueAsync("refusing", withPolicy: false);
        var subscription = await Sns.SubscribeAsync(topicArn, refusing.Arn, raw: true, Cancellation);
        (await Sns.SendAsync("SetSubscriptionAttributes",
        [
            new("SubscriptionArn", subscription), new("AttributeName", "RedrivePolicy"),
            new("AttributeValue", $"{{\"deadLetterTargetArn\":\"{deadLetter.Arn}\"}}"),
        ], cancellationToken: Cancellation)).Ok();

        (await Sns.SendAsync("Publish", [new("TopicArn", topicArn), new("Message", "refused"), .. Attribute(1, "k", "String", "v")], cancellationToken: Cancellation)).Ok();

        var deadLettered = await ReceiveOneAsync(deadLetter.Url);
        Assert.Equal("refused", deadLettered.Body);
        Assert.Equal("v", deadLettered.MessageAttributes["k"].StringValue);
        Assert.Equal("0", (await Sqs.GetQueueAttributesAsync(refusing.Url, ["ApproximateNumberOfMessages"], Cancellation)).Attributes["ApproximateNumberOfMessages"]);
        var invalid = await Sns.SendAsync("SetSubscriptionAttributes",
            [new("SubscriptionArn", subscription), new("AttributeName", "RedrivePolicy"), new("AttributeValue", "{\"maxReceiveCount\":3}")],
            cancellationToken: Cancellation);
        Assert.Equal("InvalidParameter", invalid.ErrorCode);
    }

    [Fact]
    public async Task Json_message_structure_delivers_the_sqs_entry_without_attributes()
    {
        var topicArn = await Sns.CreateTopicAsync("structured", Cancellation);
        var queue = await CreateQueueAsync("structured-queue");
        await Sns.SubscribeAsync(topicArn, queue.Arn, raw: true, Cancellation);

        (await Sns.SendAsync("Publish",
        [
            new("TopicArn", topicArn), new("MessageStructure", "json"),
            new("Message", "{\"default\":\"for everyone\",\"sqs\":\"for queues\"}"),
            .. Attribute(1, "k", "String", "v"),
        ], cancellationToken: Cancellation)).Ok();
        var noDefault = await Sns.SendAsync("Publish",
            [new("TopicArn", topicArn), new("MessageStructure", "json"), new("Message", "{\"sqs\":\"only\"}")], cancellationToken: Cancellation);

        var message = await ReceiveOneAsync(queue.Url);
        Assert.Equal("for queues", message.Body);
        Assert.True(message.MessageAttributes is null || message.MessageAttributes.Count == 0);
        Assert.Equal("InvalidParameter", noDefault.ErrorCode);
    }
}
