using System.Buffers;
using System.Globalization;
using System.Text.Json;
using Messaging.LocalAws.Protocol;

namespace Messaging.LocalAws.Sqs;

/// <summary>
/// The SQS operations in the AWS JSON 1.0 protocol (<c>X-Amz-Target: AmazonSQS.&lt;Action&gt;</c>): reads the
/// request members, calls the broker, writes the response members.
/// </summary>
internal sealed class SqsJsonApi(SqsBroker broker)
{
    private const int MaxBatchEntries = 10;
    private const int MaxBatchEntryIdLength = 80;

    private static readonly HashSet<string> SystemAttributeNames = new(StringComparer.Ordinal)
    {
        "SenderId", "SentTimestamp", "ApproximateReceiveCount", "ApproximateFirstReceiveTimestamp",
        "AWSTraceHeader", "DeadLetterQueueSourceArn", "MessageGroupId", "MessageDeduplicationId", "SequenceNumber",
    };

    public static readonly IReadOnlySet<string> Actions = new HashSet<string>(StringComparer.Ordinal)
    {
        "CreateQueue", "GetQueueUrl", "GetQueueAttributes", "SetQueueAttributes", "DeleteQueue", "ListQueues", "PurgeQueue",
        "SendMessage", "SendMessageBatch", "ReceiveMessage", "DeleteMessage", "DeleteMessageBatch",
        "ChangeMessageVisibility", "ChangeMessageVisibilityBatch", "TagQueue", "UntagQueue", "ListQueueTags",
        "ListDeadLetterSourceQueues",
    };

    /// <summary>
    /// Runs one operation and returns its response body. A long poll only notes <paramref name="clientGone"/> (the client
    /// went away) and waits on, as on SQS; <paramref name="stopping"/> (the endpoint stops listening) ends it at once.
    /// </summary>
    public async Task<byte[]> InvokeAsync(string action, JsonElement request, CancellationToken clientGone, CancellationToken stopping)
    {
        if (request.ValueKind != JsonValueKind.Object)
        {
            throw SqsErrors.Serialization("The request body must be a JSON object.");
        }

        var output = new ArrayBufferWriter<byte>();
        await using (var writer = new Utf8JsonWriter(output, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            writer.WriteStartObject();
            switch (action)
            {
                case "CreateQueue":
                    writer.WriteString("QueueUrl", broker.CreateQueue(
                        JsonInput.String(request, "QueueName"), JsonInput.StringMap(request, "Attributes"), JsonInput.StringMap(request, "tags")));
                    break;
                case "GetQueueUrl":
                    writer.WriteString("QueueUrl", broker.GetQueueUrl(
                        JsonInput.String(request, "QueueName"), JsonInput.String(request, "QueueOwnerAWSAccountId")));
                    break;
                case "GetQueueAttributes":
                    var attributes = broker.GetQueueAttributes(Queue(request), JsonInput.StringList(request, "AttributeNames"));
                    if (attributes.Count > 0)
                    {
                        WriteMap(writer, "Attributes", attributes);
                    }

                    break;
                case "SetQueueAttributes":
                    broker.SetQueueAttributes(Queue(request), JsonInput.StringMap(request, "Attributes"));
                    break;
                case "DeleteQueue":
                    broker.DeleteQueue(Queue(request));
                    break;
                case "ListQueues":
                    var (urls, nextToken) = broker.ListQueues(
                        JsonInput.String(request, "QueueNamePrefix"), JsonInput.Integer(request, "MaxResults"), JsonInput.String(request, "NextToken"));
                    WriteList(writer, "QueueUrls", urls);
                    if (nextToken is not null)
                    {
                        writer.WriteString("NextToken", nextToken);
                    }

                    break;
                case "ListDeadLetterSourceQueues":
                    var target = Queue(request);
                    WriteList(writer, "queueUrls", broker.Queues
                        .Where(source => source.Settings.RedrivePolicy?.DeadLetterTargetArn == target.Arn)
                        .Select(source => source.Url)
                        .Order(StringComparer.Ordinal)
                        .ToList());
                    break;
                case "PurgeQueue":
                    broker.PurgeQueue(Queue(request));
                    break;
                case "SendMessage":
                    WriteSendResult(writer, broker.SendMessage(Queue(request), SendInput(request)));
                    break;
                case "SendMessageBatch":
                    SendMessageBatch(writer, request);
                    break;
                case "ReceiveMessage":
                    await ReceiveMessageAsync(writer, request, clientGone, stopping).ConfigureAwait(false);
                    break;
                case "DeleteMessage":
                    broker.DeleteMessage(Queue(request), JsonInput.String(request, "ReceiptHandle"));
                    break;
                case "DeleteMessageBatch":
                    var deleteQueue = Queue(request);
                    RunBatch(writer, request, "DeleteMessageBatchRequestEntry",
                        entry => broker.DeleteMessage(deleteQueue, JsonInput.String(entry, "ReceiptHandle")));
                    break;
                case "ChangeMessageVisibility":
                    broker.ChangeMessageVisibility(Queue(request), JsonInput.String(request, "ReceiptHandle"), JsonInput.Integer(request, "VisibilityTimeout"));
                    break;
                case "ChangeMessageVisibilityBatch":
                    var visibilityQueue = Queue(request);
                    RunBatch(writer, request, "ChangeMessageVisibilityBatchRequestEntry",
                        entry => broker.ChangeMessageVisibility(visibilityQueue, JsonInput.String(entry, "ReceiptHandle"), JsonInput.Integer(entry, "VisibilityTimeout")));
                    break;
                case "TagQueue":
                    Queue(request).SetTags(JsonInput.StringMap(request, "Tags") ?? throw SqsErrors.MissingParameter("Tags"));
                    break;
                case "UntagQueue":
                    Queue(request).RemoveTags(JsonInput.StringList(request, "TagKeys") ?? throw SqsErrors.MissingParameter("TagKeys"));
                    break;
                case "ListQueueTags":
                    var tags = Queue(request).GetTags();
                    if (tags.Count > 0)
                    {
                        WriteMap(writer, "Tags", tags);
                    }

                    break;
                default:
                    throw SqsErrors.UnknownOperation($"AmazonSQS.{action}");
            }

            writer.WriteEndObject();
        }

        return output.WrittenSpan.ToArray();
    }

    private SqsQueue Queue(JsonElement request) => broker.Resolve(JsonInput.String(request, "QueueUrl"));

    private static SendMessageInput SendInput(JsonElement source) => new(
        JsonInput.String(source, "MessageBody"),
        JsonInput.Integer(source, "DelaySeconds"),
        JsonInput.MessageAttributes(source, "MessageAttributes"),
        JsonInput.MessageAttributes(source, "MessageSystemAttributes"),
        JsonInput.String(source, "MessageGroupId"),
        JsonInput.String(source, "MessageDeduplicationId"));

    private void SendMessageBatch(Utf8JsonWriter writer, JsonElement request)
    {
        var queue = Queue(request);
        var entries = ValidateBatch(request, "SendMessageBatchRequestEntry");
        var inputs = entries.Select(SendInput).ToList();
        var total = inputs.Sum(input => input.MessageBody is null ? 0 : SqsBroker.MessageSize(input.MessageBody,
            input.MessageAttributes ?? new Dictionary<string, MessageAttribute>()));
        // The batch payload limit equals the single-message limit: 256 KiB here, or the queue's larger MaximumMessageSize.
        var batchLimit = Math.Max(SqsQueueSettings.DefaultMaximumMessageSize, queue.Settings.MaximumMessageSize);
        if (total > batchLimit)
        {
            throw SqsErrors.BatchRequestTooLong(batchLimit, total);
        }

        var successful = new List<(string Id, SendMessageOutput Output)>();
        var failed = new List<(string Id, AwsServiceException Error)>();
        for (var index = 0; index < entries.Count; index++)
        {
            var id = JsonInput.String(entries[index], "Id")!;
            try
            {
                successful.Add((id, broker.SendMessage(queue, inputs[index])));
            }
            catch (AwsServiceException error)
            {
                failed.Add((id, error));
            }
        }

        if (successful.Count > 0)
        {
            writer.WriteStartArray("Successful");
            foreach (var (id, output) in successful)
            {
                writer.WriteStartObject();
                writer.WriteString("Id", id);
                WriteSendResult(writer, output);
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
        }

        WriteFailures(writer, failed);
    }

    private static void WriteSendResult(Utf8JsonWriter writer, SendMessageOutput output)
    {
        writer.WriteString("MessageId", output.MessageId);
        writer.WriteString("MD5OfMessageBody", output.Md5OfMessageBody);
        if (output.Md5OfMessageAttributes is not null)
        {
            writer.WriteString("MD5OfMessageAttributes", output.Md5OfMessageAttributes);
        }

        if (output.Md5OfMessageSystemAttributes is not null)
        {
            writer.WriteString("MD5OfMessageSystemAttributes", output.Md5OfMessageSystemAttributes);
        }

        if (output.SequenceNumber is not null)
        {
            writer.WriteString("SequenceNumber", output.SequenceNumber);
        }
    }

    private void RunBatch(Utf8JsonWriter writer, JsonElement request, string entryType, Action<JsonElement> perEntry)
    {
        var entries = ValidateBatch(request, entryType);
        var successful = new List<string>();
        var failed = new List<(string Id, AwsServiceException Error)>();
        foreach (var entry in entries)
        {
            var id = JsonInput.String(entry, "Id")!;
            try
            {
                perEntry(entry);
                successful.Add(id);
            }
            catch (AwsServiceException error)
            {
                failed.Add((id, error));
            }
        }

        if (successful.Count > 0)
        {
            writer.WriteStartArray("Successful");
            foreach (var id in successful)
            {
                writer.WriteStartObject();
                writer.WriteString("Id", id);
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
        }

        WriteFailures(writer, failed);
    }

    /// <summary>Whole-request batch rules: 1 to 10 entries, ids of 1-80 alphanumerics, hyphens and underscores, distinct.</summary>
    private static IReadOnlyList<JsonElement> ValidateBatch(JsonElement request, string entryType)
    {
        var entries = JsonInput.ObjectList(request, "Entries");
        if (entries is null || entries.Count == 0)
        {
            throw SqsErrors.EmptyBatchRequest(entryType);
        }

        if (entries.Count > MaxBatchEntries)
        {
            throw SqsErrors.TooManyEntriesInBatchRequest(entries.Count);
        }

        var ids = new HashSet<string>(StringComparer.Ordinal);
        foreach (var entry in entries)
        {
            var id = JsonInput.String(entry, "Id");
            if (string.IsNullOrEmpty(id) || id.Length > MaxBatchEntryIdLength || !id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
            {
                throw SqsErrors.InvalidBatchEntryId();
            }

            if (!ids.Add(id))
            {
                throw SqsErrors.BatchEntryIdsNotDistinct(id);
            }
        }

        return entries;
    }

    private static void WriteFailures(Utf8JsonWriter writer, IReadOnlyList<(string Id, AwsServiceException Error)> failed)
    {
        if (failed.Count == 0)
        {
            return;
        }

        writer.WriteStartArray("Failed");
        foreach (var (id, error) in failed)
        {
            writer.WriteStartObject();
            writer.WriteString("Id", id);
            writer.WriteBoolean("SenderFault", error.SenderFault);
            writer.WriteString("Code", error.Code);
            writer.WriteString("Message", error.Message);
            writer.WriteEndObject();
        }

        writer.WriteEndArray();
    }

    private async Task ReceiveMessageAsync(Utf8JsonWriter writer, JsonElement request, CancellationToken clientGone, CancellationToken stopping)
    {
        var queue = Queue(request);
        var maxMessages = JsonInput.Integer(request, "MaxNumberOfMessages") ?? 1;
        if (maxMessages is < 1 or > 10)
        {
            throw SqsErrors.InvalidParameterValue("MaxNumberOfMessages", maxMessages.ToString(CultureInfo.InvariantCulture),
                "Must be between 1 and 10, if provided.");
        }

        var waitTime = JsonInput.Integer(request, "WaitTimeSeconds") ?? queue.Settings.ReceiveMessageWaitTimeSeconds;
        if (waitTime is < 0 or > SqsQueueSettings.MaxWaitTimeSeconds)
        {
            throw SqsErrors.InvalidParameterValue("WaitTimeSeconds", waitTime.ToString(CultureInfo.InvariantCulture),
                "Must be >= 0 and <= 20, if provided.");
        }

        var visibilityTimeout = JsonInput.Integer(request, "VisibilityTimeout");
        if (visibilityTimeout is < 0 or > SqsQueueSettings.MaxVisibilityTimeout)
        {
            throw SqsErrors.InvalidParameterValue("VisibilityTimeout", visibilityTimeout.Value.ToString(CultureInfo.InvariantCulture),
                "Must be between 0 and 43200, if provided.");
        }

        // AttributeNames is the deprecated spelling of MessageSystemAttributeNames; both are honoured.
        var systemNames = (JsonInput.StringList(request, "MessageSystemAttributeNames") ?? [])
            .Concat(JsonInput.StringList(request, "AttributeNames") ?? [])
            .ToHashSet(StringComparer.Ordinal);
        var attributeNames = JsonInput.StringList(request, "MessageAttributeNames") ?? [];

        var messages = await broker.ReceiveMessageAsync(queue, maxMessages, visibilityTimeout, waitTime, clientGone, stopping).ConfigureAwait(false);
        if (messages.Count == 0)
        {
            // Like SQS, an empty receive answers "{}": clients must not assume an empty Messages list.
            return;
        }

        writer.WriteStartArray("Messages");
        foreach (var message in messages)
        {
            writer.WriteStartObject();
            writer.WriteString("MessageId", message.MessageId);
            writer.WriteString("ReceiptHandle", message.ReceiptHandle);
            writer.WriteString("MD5OfBody", MessageDigest.OfBody(message.Body));
            writer.WriteString("Body", message.Body);

            var system = message.SystemAttributes
                .Where(pair => systemNames.Contains("All") || systemNames.Contains(pair.Key))
                .Where(pair => SystemAttributeNames.Contains(pair.Key))
                .ToList();
            if (system.Count > 0)
            {
                WriteMap(writer, "Attributes", system);
            }

            var selected = message.Attributes.Where(pair => IsRequested(pair.Key, attributeNames)).ToList();
            if (selected.Count > 0)
            {
                writer.WriteString("MD5OfMessageAttributes", MessageDigest.OfAttributes(selected));
                writer.WriteStartObject("MessageAttributes");
                foreach (var (name, attribute) in selected)
                {
                    writer.WriteStartObject(name);
                    writer.WriteString("DataType", attribute.DataType);
                    if (attribute.IsBinary)
                    {
                        writer.WriteBase64String("BinaryValue", attribute.BinaryValue);
                    }
                    else
                    {
                        writer.WriteString("StringValue", attribute.StringValue);
                    }

                    writer.WriteEndObject();
                }

                writer.WriteEndObject();
            }

            writer.WriteEndObject();
        }

        writer.WriteEndArray();
    }

    /// <summary>"All" and ".*" select every attribute; "prefix.*" selects names starting with "prefix."; otherwise exact names.</summary>
    private static bool IsRequested(string name, IReadOnlyList<string> requested)
    {
        foreach (var pattern in requested)
        {
            if (pattern is "All" or ".*")
            {
                return true;
            }

            if (pattern.EndsWith(".*", StringComparison.Ordinal)
                ? name.StartsWith(pattern[..^1], StringComparison.Ordinal)
                : string.Equals(name, pattern, StringComparison.Ordinal))
            {
                return true;
            }
        }

        return false;
    }

    private static void WriteMap(Utf8JsonWriter writer, string name, IEnumerable<KeyValuePair<string, string>> map)
    {
        writer.WriteStartObject(name);
        foreach (var (key, value) in map)
        {
            writer.WriteString(key, value);
        }

        writer.WriteEndObject();
    }

    /// <summary>Empty lists are left out of the response, as SQS does.</summary>
    private static void WriteList(Utf8JsonWriter writer, string name, IReadOnlyCollection<string> items)
    {
        if (items.Count == 0)
        {
            return;
        }

        writer.WriteStartArray(name);
        foreach (var item in items)
        {
            writer.WriteStringValue(item);
        }

        writer.WriteEndArray();
    }
}
