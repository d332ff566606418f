using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using Amazon.SQS;
using Amazon.SQS.Model;

namespace Messaging.LocalAws.Tests;

public sealed class SqsEndpointTests : LocalAwsTestBase
{
    private async Task<string> CreateQueueAsync(string name, Dictionary<string, string>? attributes = null) =>
        (await Sqs.CreateQueueAsync(new CreateQueueRequest { QueueName = name, Attributes = attributes }, Cancellation)).QueueUrl;

    private async Task<Dictionary<string, string>> AttributesAsync(string queueUrl) =>
        (await Sqs.GetQueueAttributesAsync(new GetQueueAttributesRequest { QueueUrl = queueUrl, AttributeNames = ["All"] }, Cancellation)).Attributes;

    [Fact]
    public async Task Queue_url_and_arn_follow_the_documented_formats()
    {
        var url = await CreateQueueAsync("orders");

        Assert.Equal($"{Endpoint.ServiceUrl}000000000000/orders", url);
        Assert.Equal(url, (await Sqs.GetQueueUrlAsync("orders", Cancellation)).QueueUrl);
        var attributes = await AttributesAsync(url);
        Assert.Equal("arn:aws:sqs:us-east-1:000000000000:orders", attributes["QueueArn"]);
        Assert.Equal("30", attributes["VisibilityTimeout"]);
        Assert.Equal("345600", attributes["MessageRetentionPeriod"]);
        Assert.Equal("262144", attributes["MaximumMessageSize"]);
        Assert.Equal("0", attributes["ApproximateNumberOfMessages"]);
    }

    [Fact]
    public async Task CreateQueue_is_idempotent_for_equal_attributes_and_refuses_different_ones()
    {
        var url = await CreateQueueAsync("idempotent", new() { ["VisibilityTimeout"] = "5" });

        Assert.Equal(url, await CreateQueueAsync("idempotent", new() { ["VisibilityTimeout"] = "5" }));
        await Assert.ThrowsAsync<QueueNameExistsException>(() => CreateQueueAsync("idempotent", new() { ["VisibilityTimeout"] = "6" }));
    }

    [Fact]
    public async Task Unknown_queue_maps_to_the_sdk_QueueDoesNotExist_exception()
    {
        var error = await Assert.ThrowsAsync<QueueDoesNotExistException>(() => Sqs.GetQueueUrlAsync("missing", Cancellation));
        Assert.Equal(HttpStatusCode.BadRequest, error.StatusCode);
    }

    [Fact]
    public async Task A_fifo_name_needs_the_FifoQueue_attribute()
    {
        var error = await Assert.ThrowsAsync<AmazonSQSException>(() => CreateQueueAsync("jobs.fifo"));
        Assert.Equal("InvalidParameterValue", error.ErrorCode);
        Assert.NotNull(await CreateQueueAsync("jobs.fifo", new() { ["FifoQueue"] = "true" }));
    }

    [Fact]
    public async Task Message_attributes_round_trip_and_pass_the_sdk_md5_verification()
    {
        var url = await CreateQueueAsync("attributes");
        var binary = new byte[] { 0, 1, 2, 250, 255 };
        var sent = await Sqs.SendMessageAsync(new SendMessageRequest
        {
            QueueUrl = url,
            MessageBody = "héllo ✓ 𝄞",
            MessageAttributes = new()
            {
                ["ce-type"] = new() { DataType = "String", StringValue = "com.example.created" },
                ["ce.count"] = new() { DataType = "Number", StringValue = "-12.5e3" },
                ["blob"] = new() { DataType = "Binary", BinaryValue = new MemoryStream(binary) },
                ["Custom"] = new() { DataType = "String.custom", StringValue = "ü" },
            },
        }, Cancellation);
        Assert.Equal(Convert.ToHexStringLower(MD5.HashData(Encoding.UTF8.GetBytes("héllo ✓ 𝄞"))), sent.MD5OfMessageBody);
        Assert.NotNull(sent.MD5OfMessageAttributes);

        // The SDK recomputes MD5OfBody and MD5OfMessageAttributes of what it received and throws on a mismatch.
        var received = await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest
        {
            QueueUrl = url,
            MessageAttributeNames = ["All"],
            MessageSystemAttributeNames = ["All"],
        }, Cancellation);

        var message = Assert.Single(received.Messages);
        Assert.Equal(sent.MessageId, message.MessageId);
        Assert.Equal("héllo ✓ 𝄞", message.Body);
        Assert.Equal(sent.MD5OfMessageAttributes, message.MD5OfMessageAttributes);
        Assert.Equal("com.example.created", message.MessageAttributes["ce-type"].StringValue);
        Assert.Equal("-12.5e3", message.MessageAttributes["ce.count"].StringValue);
        Assert.Equal("String.custom", message.MessageAttributes["Custom"].DataType);
        Assert.Equal(binary, message.MessageAttributes["blob"].BinaryValue.ToArray());
        Assert.Equal("1", message.Attributes["ApproximateReceiveCount"]);
        Assert.Equal("000000000000", message.Attributes["SenderId"]);
        Assert.True(long.Parse(message.Attributes["SentTimestamp"], System.Globalization.CultureInfo.InvariantCulture) > 0);
        Assert.True(message.Attributes.ContainsKey("ApproximateFirstReceiveTimestamp"));
    }

    [Fact]
    public async Task Attribute_name_patterns_select_attributes_and_the_digest_covers_only_those()
    {
        var url = await CreateQueueAsync("patterns");
        await Sqs.SendMessageAsync(new SendMessageRequest
        {
            QueueUrl = url,
            MessageBody = "x",
            MessageAttributes = new()
            {
                ["ce.id"] = new() { DataType = "String", StringValue = "1" },
                ["ce.source"] = new() { DataType = "String", StringValue = "/s" },
                ["other"] = new() { DataType = "String", StringValue = "o" },
            },
        }, Cancellation);

        var received = await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, MessageAttributeNames = ["ce.*"] }, Cancellation);

        var message = Assert.Single(received.Messages);
        Assert.Equal(["ce.id", "ce.source"], message.MessageAttributes.Keys.Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task Received_message_stays_invisible_until_its_visibility_timeout_ends()
    {
        var url = await CreateQueueAsync("visibility");
        await Sqs.SendMessageAsync(url, "body", Cancellation);

        var first = Assert.Single((await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, VisibilityTimeout = 600 }, Cancellation)).Messages);
        Assert.Null((await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url }, Cancellation)).Messages);
        var attributes = await AttributesAsync(url);
        Assert.Equal("0", attributes["ApproximateNumberOfMessages"]);
        Assert.Equal("1", attributes["ApproximateNumberOfMessagesNotVisible"]);

        // Shortened to one second, the timeout ends and a waiting long poll wakes for it.
        await Sqs.ChangeMessageVisibilityAsync(url, first.ReceiptHandle, 1, Cancellation);
        var stopwatch = Stopwatch.StartNew();
        var again = Assert.Single((await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest
        {
            QueueUrl = url,
            WaitTimeSeconds = 20,
            MessageSystemAttributeNames = ["ApproximateReceiveCount"],
        }, Cancellation)).Messages);
        Assert.InRange(stopwatch.Elapsed, TimeSpan.Zero, TimeSpan.FromSeconds(15));
        Assert.Equal(first.MessageId, again.MessageId);
        Assert.NotEqual(first.ReceiptHandle, again.ReceiptHandle);
        Assert.Equal("2", again.Attributes["ApproximateReceiveCount"]);
    }

    [Fact]
    public async Task ChangeMessageVisibility_to_zero_makes_the_message_visible_at_once()
    {
        var url = await CreateQueueAsync("change-visibility");
        await Sqs.SendMessageAsync(url, "body", Cancellation);
        var received = Assert.Single((await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, VisibilityTimeout = 600 }, Cancellation)).Messages);

        await Sqs.ChangeMessageVisibilityAsync(url, received.ReceiptHandle, 0, Cancellation);

        var again = Assert.Single((await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, VisibilityTimeout = 600 }, Cancellation)).Messages);
        Assert.Equal(received.MessageId, again.MessageId);
        await Sqs.ChangeMessageVisibilityAsync(url, again.ReceiptHandle, 0, Cancellation);
        // Not in flight any more: a second change is refused.
        await Assert.ThrowsAsync<MessageNotInflightException>(() => Sqs.ChangeMessageVisibilityAsync(url, again.ReceiptHandle, 10, Cancellation));
        // Beyond 12 hours is refused.
        var third = Assert.Single((await Sqs.ReceiveMessageAsync(url, Cancellation)).Messages);
        var error = await Assert.ThrowsAsync<AmazonSQSException>(() => Sqs.ChangeMessageVisibilityAsync(url, third.ReceiptHandle, 43_201, Cancellation));
        Assert.Equal("InvalidParameterValue", error.ErrorCode);
    }

    [Fact]
    public async Task Delete_with_a_superseded_receipt_handle_succeeds_but_deletes_nothing()
    {
        var url = await CreateQueueAsync("stale-handle");
        await Sqs.SendMessageAsync(url, "body", Cancellation);
        var first = Assert.Single((await Sqs.ReceiveMessageAsync(url, Cancellation)).Messages);
        await Sqs.ChangeMessageVisibilityAsync(url, first.ReceiptHandle, 0, Cancellation);
        var second = Assert.Single((await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, VisibilityTimeout = 0 }, Cancellation)).Messages);

        await Sqs.DeleteMessageAsync(url, first.ReceiptHandle, Cancellation);
        Assert.Equal("1", (await AttributesAsync(url))["ApproximateNumberOfMessages"]);

        await Sqs.DeleteMessageAsync(url, second.ReceiptHandle, Cancellation);
        Assert.Equal("0", (await AttributesAsync(url))["ApproximateNumberOfMessages"]);
        await Assert.ThrowsAsync<ReceiptHandleIsInvalidException>(() => Sqs.DeleteMessageAsync(url, "not-a-handle", Cancellation));
    }

    [Fact]
    public async Task Message_received_maxReceiveCount_times_moves_to_the_dead_letter_queue()
    {
        var deadLetterUrl = await CreateQueueAsync("work-dlq");
        var deadLetterArn = (await AttributesAsync(deadLetterUrl))["QueueArn"];
        var url = await CreateQueueAsync("work", new()
        {
            ["RedrivePolicy"] = $"{{\"deadLetterTargetArn\":\"{deadLetterArn}\",\"maxReceiveCount\":\"2\"}}",
        });
        Assert.Equal($"{{\"deadLetterTargetArn\":\"{deadLetterArn}\",\"maxReceiveCount\":2}}", (await AttributesAsync(url))["RedrivePolicy"]);
        Assert.Equal([url], (await Sqs.ListDeadLetterSourceQueuesAsync(new ListDeadLetterSourceQueuesRequest { QueueUrl = deadLetterUrl }, Cancellation)).QueueUrls);
        var sent = await Sqs.SendMessageAsync(url, "poison", Cancellation);

        var receive = new ReceiveMessageRequest { QueueUrl = url, VisibilityTimeout = 0, MessageSystemAttributeNames = ["All"] };
        Assert.Equal("1", Assert.Single((await Sqs.ReceiveMessageAsync(receive, Cancellation)).Messages).Attributes["ApproximateReceiveCount"]);
        Assert.Equal("2", Assert.Single((await Sqs.ReceiveMessageAsync(receive, Cancellation)).Messages).Attributes["ApproximateReceiveCount"]);
        Assert.Empty((await Sqs.ReceiveMessageAsync(receive, Cancellation)).Messages ?? []);

        var dead = Assert.Single((await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = deadLetterUrl, MessageSystemAttributeNames = ["All"] }, Cancellation)).Messages);
        Assert.Equal(sent.MessageId, dead.MessageId);
        Assert.Equal("poison", dead.Body);
        Assert.Equal("3", dead.Attributes["ApproximateReceiveCount"]);
        Assert.Equal("arn:aws:sqs:us-east-1:000000000000:work", dead.Attributes["DeadLetterQueueSourceArn"]);
        Assert.Equal("0", (await AttributesAsync(url))["ApproximateNumberOfMessages"]);
    }

    [Fact]
    public async Task RedrivePolicy_to_a_missing_queue_is_refused()
    {
        var error = await Assert.ThrowsAsync<AmazonSQSException>(() => CreateQueueAsync("orphan", new()
        {
            ["RedrivePolicy"] = "{\"deadLetterTargetArn\":\"arn:aws:sqs:us-east-1:000000000000:nowhere\",\"maxReceiveCount\":3}",
        }));
        Assert.Contains("Dead letter target does not exist", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Long_poll_returns_as_soon_as_a_message_arrives()
    {
        var url = await CreateQueueAsync("long-poll");
        var stopwatch = Stopwatch.StartNew();
        var poll = Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, WaitTimeSeconds = 20 }, Cancellation);
        await Sqs.SendMessageAsync(url, "wake up", Cancellation);

        var received = await poll.WaitAsync(TimeSpan.FromSeconds(15), Cancellation);
        Assert.Equal("wake up", Assert.Single(received.Messages).Body);
        Assert.InRange(stopwatch.Elapsed, TimeSpan.Zero, TimeSpan.FromSeconds(15));
    }

    [Fact]
    public async Task Long_poll_on_an_empty_queue_waits_for_the_wait_time()
    {
        var url = await CreateQueueAsync("long-poll-empty");
        var stopwatch = Stopwatch.StartNew();

        var received = await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, WaitTimeSeconds = 1 }, Cancellation);

        Assert.Empty(received.Messages ?? []);
        Assert.InRange(stopwatch.Elapsed, TimeSpan.FromMilliseconds(900), TimeSpan.FromSeconds(15));
    }

    [Fact]
    public async Task Long_poll_whose_client_went_away_ends_with_its_wait_time()
    {
        var url = await CreateQueueAsync("abandoned-poll-ends");
        using var crash = CancellationTokenSource.CreateLinkedTokenSource(Cancellation);
        // Long enough that, under load, the endpoint sees the client go away before the wait time would have ended the poll anyway.
        var abandoned = Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, WaitTimeSeconds = 8 }, crash.Token);
        await Until.TrueAsync(() => Endpoint.WaitingReceivePolls == 1, "the long poll waits on the endpoint");
        await crash.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => abandoned);
        await Until.TrueAsync(() => Endpoint.AbandonedReceivePolls == 1, "the endpoint sees the client go away");
        await Until.TrueAsync(() => Endpoint.WaitingReceivePolls == 0, "the abandoned poll's wait time ends", TimeSpan.FromSeconds(20));

        await Sqs.SendMessageAsync(url, "after the abandoned poll", Cancellation);

        var received = Assert.Single((await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest
        {
            QueueUrl = url,
            MessageSystemAttributeNames = ["ApproximateReceiveCount"],
        }, Cancellation)).Messages);
        Assert.Equal("1", received.Attributes["ApproximateReceiveCount"]);
        Assert.DoesNotContain(Logs.Messages, line => line.Contains("nobody gets", StringComparison.Ordinal));
    }

    [Fact]
    public async Task An_outage_ends_long_polls_whose_client_went_away()
    {
        var url = await CreateQueueAsync("abandoned-poll-outage");
        using var crash = CancellationTokenSource.CreateLinkedTokenSource(Cancellation);
        var abandoned = Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, WaitTimeSeconds = 20 }, crash.Token);
        await Until.TrueAsync(() => Endpoint.WaitingReceivePolls == 1, "the long poll waits on the endpoint");
        await crash.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => abandoned);
        await Until.TrueAsync(() => Endpoint.AbandonedReceivePolls == 1, "the endpoint sees the client go away");

        await Endpoint.StopListeningAsync(Cancellation);
        await Until.TrueAsync(() => Endpoint.WaitingReceivePolls == 0, "the outage ends the abandoned poll, long before its 20 seconds");
        await Endpoint.StartListeningAsync(Cancellation);
        await Sqs.SendMessageAsync(url, "after the outage", Cancellation);

        var received = Assert.Single((await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest
        {
            QueueUrl = url,
            MessageSystemAttributeNames = ["ApproximateReceiveCount"],
        }, Cancellation)).Messages);
        Assert.Equal("1", received.Attributes["ApproximateReceiveCount"]);
    }

    [Fact]
    public async Task Delayed_message_is_not_received_before_its_delay()
    {
        var url = await CreateQueueAsync("delayed");
        await Sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = "much later", DelaySeconds = 900 }, Cancellation);
        // Long enough that both are still delayed when the attributes are read under load; the long poll below outlasts it.
        var sinceSend = Stopwatch.StartNew();
        await Sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = "soon", DelaySeconds = 5 }, Cancellation);

        Assert.Equal("2", (await AttributesAsync(url))["ApproximateNumberOfMessagesDelayed"]);
        var received = await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, WaitTimeSeconds = 20, MaxNumberOfMessages = 10 }, Cancellation);

        Assert.Equal("soon", Assert.Single(received.Messages).Body);
        Assert.True(sinceSend.Elapsed >= TimeSpan.FromSeconds(4.5), $"received {sinceSend.Elapsed} after sending, before its 5 s delay");
        Assert.Equal("1", (await AttributesAsync(url))["ApproximateNumberOfMessagesDelayed"]);
    }

    [Fact]
    public async Task Batch_send_and_delete_report_per_entry_failures()
    {
        var url = await CreateQueueAsync("batch");
        var sent = await Sqs.SendMessageBatchAsync(new SendMessageBatchRequest
        {
            QueueUrl = url,
            Entries =
            [
                new() { Id = "a", MessageBody = "one" },
                new() { Id = "b", MessageBody = "bad \u0001 char" },
                new()
                {
                    Id = "c", MessageBody = "three",
                    MessageAttributes = new() { ["k"] = new() { DataType = "Number", StringValue = "42" } },
                },
            ],
        }, Cancellation);

        Assert.Equal(["a", "c"], sent.Successful.Select(entry => entry.Id).Order(StringComparer.Ordinal));
        var failure = Assert.Single(sent.Failed);
        Assert.Equal("b", failure.Id);
        Assert.Equal("InvalidMessageContents", failure.Code);
        Assert.True(failure.SenderFault);

        var received = await Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, MaxNumberOfMessages = 10 }, Cancellation);
        Assert.Equal(2, received.Messages.Count);
        var deleted = await Sqs.DeleteMessageBatchAsync(new DeleteMessageBatchRequest
        {
            QueueUrl = url,
            Entries =
            [
                new() { Id = "first", ReceiptHandle = received.Messages[0].ReceiptHandle },
                new() { Id = "second", ReceiptHandle = received.Messages[1].ReceiptHandle },
                new() { Id = "bogus", ReceiptHandle = "garbage" },
            ],
        }, Cancellation);
        Assert.Equal(2, deleted.Successful.Count);
        Assert.Equal("ReceiptHandleIsInvalid", Assert.Single(deleted.Failed).Code);
        var attributes = await AttributesAsync(url);
        Assert.Equal("0", attributes["ApproximateNumberOfMessages"]);
        Assert.Equal("0", attributes["ApproximateNumberOfMessagesNotVisible"]);
    }

    [Fact]
    public async Task Batch_requests_are_checked_as_a_whole()
    {
        var url = await CreateQueueAsync("batch-rules");

        await Assert.ThrowsAsync<TooManyEntriesInBatchRequestException>(() => Sqs.SendMessageBatchAsync(new SendMessageBatchRequest
        {
            QueueUrl = url,
            Entries = Enumerable.Range(0, 11).Select(index => new SendMessageBatchRequestEntry { Id = $"e{index}", MessageBody = "x" }).ToList(),
        }, Cancellation));
        await Assert.ThrowsAsync<BatchEntryIdsNotDistinctException>(() => Sqs.SendMessageBatchAsync(new SendMessageBatchRequest
        {
            QueueUrl = url,
            Entries = [new() { Id = "same", MessageBody = "x" }, new() { Id = "same", MessageBody = "y" }],
        }, Cancellation));
        await Assert.ThrowsAsync<InvalidBatchEntryIdException>(() => Sqs.SendMessageBatchAsync(new SendMessageBatchRequest
        {
            QueueUrl = url,
            Entries = [new() { Id = "not valid!", MessageBody = "x" }],
        }, Cancellation));
        await Assert.ThrowsAsync<EmptyBatchRequestException>(() => Sqs.DeleteMessageBatchAsync(new DeleteMessageBatchRequest
        {
            QueueUrl = url,
            Entries = [],
        }, Cancellation));
        await Assert.ThrowsAsync<BatchRequestTooLongException>(() => Sqs.SendMessageBatchAsync(new SendMessageBatchRequest
        {
            QueueUrl = url,
            Entries = [new() { Id = "a", MessageBody = new string('a', 200_000) }, new() { Id = "b", MessageBody = new string('b', 200_000) }],
        }, Cancellation));
        Assert.Equal("0", (await AttributesAsync(url))["ApproximateNumberOfMessages"]);
    }

    [Fact]
    public async Task Message_size_limit_counts_body_and_attributes()
    {
        var url = await CreateQueueAsync("size");
        var attributes = new Dictionary<string, MessageAttributeValue>
        {
            ["name"] = new() { DataType = "String", StringValue = "value" },
        };
        var attributeBytes = "name".Length + "String".Length + "value".Length;
        var fits = new string('x', 262_144 - attributeBytes);

        await Sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = fits, MessageAttributes = attributes }, Cancellation);
        var error = await Assert.ThrowsAsync<AmazonSQSException>(() => Sqs.SendMessageAsync(
            new SendMessageRequest { QueueUrl = url, MessageBody = fits + "x", MessageAttributes = attributes }, Cancellation));

        Assert.Equal("InvalidParameterValue", error.ErrorCode);
        Assert.Contains("Message must be shorter than 262144 bytes", error.Message, StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.BadRequest, error.StatusCode);
    }

    [Fact]
    public async Task Message_attribute_rules_are_enforced()
    {
        var url = await CreateQueueAsync("attribute-rules");

        async Task<AmazonSQSException> SendWith(Dictionary<string, MessageAttributeValue> attributes) =>
            await Assert.ThrowsAsync<AmazonSQSException>(() => Sqs.SendMessageAsync(
                new SendMessageRequest { QueueUrl = url, MessageBody = "x", MessageAttributes = attributes }, Cancellation));

        var tooMany = Enumerable.Range(0, 11).ToDictionary(index => $"a{index}", _ => new MessageAttributeValue { DataType = "String", StringValue = "v" });
        Assert.Contains("exceeds the allowed maximum [10]", (await SendWith(tooMany)).Message, StringComparison.Ordinal);
        Assert.Contains("reserved", (await SendWith(new() { ["AWS.trace"] = new() { DataType = "String", StringValue = "v" } })).Message, StringComparison.Ordinal);
        Assert.Contains("successive periods", (await SendWith(new() { ["a..b"] = new() { DataType = "String", StringValue = "v" } })).Message, StringComparison.Ordinal);
        Assert.Contains("invalid message attribute type", (await SendWith(new() { ["a"] = new() { DataType = "Text", StringValue = "v" } })).Message, StringComparison.Ordinal);
        Assert.Contains("number", (await SendWith(new() { ["a"] = new() { DataType = "Number", StringValue = "12abc" } })).Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Purge_removes_messages_and_is_limited_to_once_a_minute()
    {
        var url = await CreateQueueAsync("purge");
        await Sqs.SendMessageAsync(url, "x", Cancellation);

        await Sqs.PurgeQueueAsync(url, Cancellation);

        Assert.Equal("0", (await AttributesAsync(url))["ApproximateNumberOfMessages"]);
        await Assert.ThrowsAsync<PurgeQueueInProgressException>(() => Sqs.PurgeQueueAsync(url, Cancellation));
    }

    [Fact]
    public async Task ListQueues_filters_by_prefix_and_DeleteQueue_removes_the_queue()
    {
        await CreateQueueAsync("alpha-1");
        await CreateQueueAsync("alpha-2");
        var beta = await CreateQueueAsync("beta");

        var listed = await Sqs.ListQueuesAsync(new ListQueuesRequest { QueueNamePrefix = "alpha" }, Cancellation);
        Assert.Equal(2, listed.QueueUrls.Count);

        await Sqs.DeleteQueueAsync(beta, Cancellation);
        await Assert.ThrowsAsync<QueueDoesNotExistException>(() => Sqs.GetQueueUrlAsync("beta", Cancellation));
        await Assert.ThrowsAsync<QueueDeletedRecentlyException>(() => CreateQueueAsync("beta"));
    }

    [Fact]
    public async Task SetQueueAttributes_stores_policy_and_validates_ranges()
    {
        var url = await CreateQueueAsync("settable");
        const string policy = """{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"sns.amazonaws.com"},"Action":"sqs:SendMessage","Resource":"*"}]}""";

        await Sqs.SetQueueAttributesAsync(url, new() { ["Policy"] = policy, ["VisibilityTimeout"] = "7", ["DelaySeconds"] = "0" }, Cancellation);

        var attributes = await AttributesAsync(url);
        Assert.Equal(policy, attributes["Policy"]);
        Assert.Equal("7", attributes["VisibilityTimeout"]);
        var error = await Assert.ThrowsAsync<InvalidAttributeValueException>(() => Sqs.SetQueueAttributesAsync(url, new() { ["VisibilityTimeout"] = "43201" }, Cancellation));
        Assert.Contains("VisibilityTimeout", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Unsigned_requests_are_refused_with_MissingAuthenticationToken()
    {
        using var http = new HttpClient { BaseAddress = Endpoint.ServiceUrl };
        using var request = new HttpRequestMessage(HttpMethod.Post, "/")
        {
            Content = new StringContent("{\"QueueName\":\"unsigned\"}", Encoding.UTF8),
        };
        request.Content.Headers.ContentType = new("application/x-amz-json-1.0");
        request.Headers.Add("X-Amz-Target", "AmazonSQS.CreateQueue");

        using var response = await http.SendAsync(request, Cancellation);

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("MissingAuthenticationToken;Sender", response.Headers.GetValues("x-amzn-query-error").Single());
        await Assert.ThrowsAsync<QueueDoesNotExistException>(() => Sqs.GetQueueUrlAsync("unsigned", Cancellation));
    }

    [Theory]
    [InlineData("AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/sqs/aws4_request", HttpStatusCode.BadRequest, "IncompleteSignature;Sender")]
    [InlineData("AWS test:c2lnbmF0dXJl", HttpStatusCode.BadRequest, "IncompleteSignature;Sender")]
    [InlineData("AWS4-HMAC-SHA256 Credential=test/20250101/eu-west-1/sqs/aws4_request, SignedHeaders=host;x-amz-date, Signature=00ff", HttpStatusCode.Forbidden, "SignatureDoesNotMatch;Sender")]
    [InlineData("AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/sns/aws4_request, SignedHeaders=host;x-amz-date, Signature=00ff", HttpStatusCode.Forbidden, "SignatureDoesNotMatch;Sender")]
    public async Task Malformed_or_misscoped_signatures_are_refused(string authorization, HttpStatusCode status, string queryError)
    {
        using var http = new HttpClient { BaseAddress = Endpoint.ServiceUrl };
        using var request = new HttpRequestMessage(HttpMethod.Post, "/") { Content = new StringContent("{\"QueueName\":\"refused\"}", Encoding.UTF8) };
        request.Content.Headers.ContentType = new("application/x-amz-json-1.0");
        request.Headers.Add("X-Amz-Target", "AmazonSQS.CreateQueue");
        request.Headers.Add("X-Amz-Date", "20250101T000000Z");
        request.Headers.TryAddWithoutValidation("Authorization", authorization);

        using var response = await http.SendAsync(request, Cancellation);

        Assert.Equal(status, response.StatusCode);
        Assert.Equal(queryError, response.Headers.GetValues("x-amzn-query-error").Single());
        await Assert.ThrowsAsync<QueueDoesNotExistException>(() => Sqs.GetQueueUrlAsync("refused", Cancellation));
    }

    [Fact]
    public async Task Outage_refuses_connections_and_keeps_all_state()
    {
        var url = await CreateQueueAsync("durable");
        await Sqs.SendMessageAsync(url, "kept", Cancellation);
        var serviceUrl = Endpoint.ServiceUrl;
        var pendingPoll = Sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = await CreateQueueAsync("idle"), WaitTimeSeconds = 20 }, Cancellation);

        await Endpoint.StopListeningAsync(Cancellation);

        await Assert.ThrowsAnyAsync<Exception>(() => pendingPoll.WaitAsync(TimeSpan.FromSeconds(10), Cancellation));
        var refused = await Assert.ThrowsAnyAsync<Exception>(() => Sqs.GetQueueUrlAsync("durable", Cancellation));
        Assert.True(IsConnectionFailure(refused), $"Expected a refused connection, got {refused}");

        await Endpoint.StartListeningAsync(Cancellation);

        Assert.Equal(serviceUrl, Endpoint.ServiceUrl);
        var received = await Sqs.ReceiveMessageAsync(url, Cancellation);
        Assert.Equal("kept", Assert.Single(received.Messages).Body);
    }

    private static bool IsConnectionFailure(Exception? error)
    {
        for (; error is not null; error = error.InnerException)
        {
            if (error is HttpRequestException or System.Net.Sockets.SocketException)
            {
                return true;
            }
        }

        return false;
    }
}
