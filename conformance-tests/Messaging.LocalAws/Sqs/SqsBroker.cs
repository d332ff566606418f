using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using Messaging.LocalAws.Protocol;
using Microsoft.Extensions.Logging;

namespace Messaging.LocalAws.Sqs;

/// <summary>Input of SendMessage and of each SendMessageBatch entry.</summary>
internal sealed record SendMessageInput(
    string? MessageBody,
    int? DelaySeconds,
    IReadOnlyDictionary<string, MessageAttribute>? MessageAttributes,
    IReadOnlyDictionary<string, MessageAttribute>? MessageSystemAttributes,
    string? MessageGroupId,
    string? MessageDeduplicationId);

internal enum TopicDeliveryOutcome
{
    Delivered,
    QueueDoesNotExist,
    DeniedByQueuePolicy,
    TooManyAttributesForRawDelivery,
}

internal sealed record SendMessageOutput(string MessageId, string Md5OfMessageBody, string? Md5OfMessageAttributes, string? Md5OfMessageSystemAttributes, string? SequenceNumber = null);

/// <summary>The SQS half of the endpoint: queues of one account and region, and the operations on them.</summary>
internal sealed partial class SqsBroker(LocalAwsContext context)
{
    public const int MaxMessageAttributes = 10;
    private static readonly TimeSpan QueueNameReuseDelay = TimeSpan.FromSeconds(60);

    private readonly ConcurrentDictionary<string, SqsQueue> _queues = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, DateTimeOffset> _deletedAt = new(StringComparer.Ordinal);
    private readonly Lock _createLock = new();
    private readonly ILogger _logger = context.LoggerFactory.CreateLogger<SqsBroker>();
    private int _waitingPolls;
    private int _abandonedPolls;

    public IEnumerable<SqsQueue> Queues => _queues.Values;

    /// <summary>Long polls waiting now, those whose client went away included.</summary>
    public int WaitingPolls => Volatile.Read(ref _waitingPolls);

    /// <summary>Long polls whose client went away while they waited, since the endpoint started.</summary>
    public int AbandonedPolls => Volatile.Read(ref _abandonedPolls);

    public string ArnOf(string queueName) => $"arn:aws:sqs:{context.Region}:{context.AccountId}:{queueName}";

    public string UrlOf(string queueName) => new Uri(context.ServiceUrl, $"{context.AccountId}/{queueName}").ToString();

    public string CreateQueue(string? queueName, IReadOnlyDictionary<string, string>? attributes, IReadOnlyDictionary<string, string>? tags)
    {
        if (string.IsNullOrEmpty(queueName))
        {
            throw SqsErrors.MissingParameter("QueueName");
        }

        var fifo = ValidateQueueName(queueName, attributes);
        var requested = new SqsQueueSettings(fifo);
        foreach (var (name, value) in attributes ?? new Dictionary<string, string>())
        {
            requested.Apply(name, value, IsFifo);
        }

        if (requested.FifoThroughputLimit == "perMessageGroupId" && requested.DeduplicationScope != "messageGroup")
        {
            throw SqsErrors.InvalidAttributeValue("Invalid value for the parameter FifoThroughputLimit. Reason: perMessageGroupId is valid only when DeduplicationScope is messageGroup.");
        }

        lock (_createLock)
        {
            if (_queues.TryGetValue(queueName, out var existing))
            {
                // Idempotent only when every given attribute equals the existing queue's value.
                var current = existing.Settings;
                foreach (var name in (attributes ?? new Dictionary<string, string>()).Keys)
                {
                    if (!string.Equals(requested.Get(name), current.Get(name), StringComparison.Ordinal))
                    {
                        throw SqsErrors.QueueNameExists(name);
                    }
                }

                return existing.Url;
            }

            if (_deletedAt.TryGetValue(queueName, out var deletedAt) && context.Now - deletedAt < QueueNameReuseDelay)
            {
                throw SqsErrors.QueueDeletedRecently(queueName);
            }

            var queue = new SqsQueue(queueName, ArnOf(queueName), UrlOf(queueName), requested, context.Now, tags);
            _queues[queueName] = queue;
            LogQueueCreated(queueName);
            return queue.Url;
        }
    }

    public string GetQueueUrl(string? queueName, string? ownerAccountId)
    {
        if (string.IsNullOrEmpty(queueName))
        {
            throw SqsErrors.MissingParameter("QueueName");
        }

        if (ownerAccountId is not null && ownerAccountId != context.AccountId)
        {
            throw SqsErrors.QueueDoesNotExist();
        }

        return _queues.TryGetValue(queueName, out var queue) ? queue.Url : throw SqsErrors.QueueDoesNotExist();
    }

    /// <summary>Finds the queue a QueueUrl names: the path must be /{accountId}/{queueName}; the host is not compared.</summary>
    public SqsQueue Resolve(string? queueUrl)
    {
        if (string.IsNullOrEmpty(queueUrl))
        {
            throw SqsErrors.MissingParameter("QueueUrl");
        }

        if (!Uri.TryCreate(queueUrl, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
        {
            throw new AwsServiceException("InvalidAddress", "InvalidAddress", 404, $"The address {queueUrl} is not valid for this endpoint.");
        }

        var segments = uri.AbsolutePath.Trim('/').Split('/');
        if (segments.Length != 2 || segments[0] != context.AccountId || !_queues.TryGetValue(segments[1], out var queue))
        {
            throw SqsErrors.QueueDoesNotExist();
        }

        return queue;
    }

    /// <summary>Null when no queue has the ARN, else whether it is a FIFO queue.</summary>
    private bool? IsFifo(string arn) => FindByArn(arn)?.Settings.FifoQueue;

    public SqsQueue? FindByArn(string arn)
    {
        var prefix = $"arn:aws:sqs:{context.Region}:{context.AccountId}:";
        return arn.StartsWith(prefix, StringComparison.Ordinal) && _queues.TryGetValue(arn[prefix.Length..], out var queue) ? queue : null;
    }

    public void DeleteQueue(SqsQueue queue)
    {
        lock (_createLock)
        {
            if (_queues.TryRemove(new KeyValuePair<string, SqsQueue>(queue.Name, queue)))
            {
                _deletedAt[queue.Name] = context.Now;
                queue.MarkDeleted();
                LogQueueDeleted(queue.Name);
            }
        }
    }

    public (IReadOnlyList<string> Urls, string? NextToken) ListQueues(string? prefix, int? maxResults, string? nextToken)
    {
        if (maxResults is < 1 or > 1000)
        {
            throw SqsErrors.InvalidParameterValue("MaxResults", maxResults?.ToString(CultureInfo.InvariantCulture), "MaxResults must be an integer between 1 and 1000.");
        }

        if (nextToken is not null && maxResults is null)
        {
            throw SqsErrors.InvalidParameterValue("MaxResults is required when NextToken is given.");
        }

        string? after = null;
        if (nextToken is not null)
        {
            try
            {
                after = Encoding.UTF8.GetString(Convert.FromBase64String(nextToken));
            }
            catch (FormatException)
            {
                throw SqsErrors.InvalidParameterValue("NextToken", nextToken, "Invalid NextToken value.");
            }
        }

        var names = _queues.Keys
            .Where(name => prefix is null || name.StartsWith(prefix, StringComparison.Ordinal))
            .Where(name => after is null || string.CompareOrdinal(name, after) > 0)
            .OrderBy(name => name, StringComparer.Ordinal)
            .ToList();
        var limit = maxResults ?? 1000;
        var page = names.Take(limit).ToList();
        var token = maxResults is not null && names.Count > limit ? Convert.ToBase64String(Encoding.UTF8.GetBytes(page[^1])) : null;
        return (page.Select(UrlOf).ToList(), token);
    }

    public IReadOnlyDictionary<string, string> GetQueueAttributes(SqsQueue queue, IReadOnlyList<string>? names)
    {
        var all = new Dictionary<string, string>(StringComparer.Ordinal);
        var settings = queue.Settings;
        var (visible, notVisible, delayed) = queue.Count(context.Now);
        all["QueueArn"] = queue.Arn;
        all["ApproximateNumberOfMessages"] = Text(visible);
        all["ApproximateNumberOfMessagesNotVisible"] = Text(notVisible);
        all["ApproximateNumberOfMessagesDelayed"] = Text(delayed);
        all["CreatedTimestamp"] = Text(queue.CreatedAt.ToUnixTimeSeconds());
        all["LastModifiedTimestamp"] = Text(queue.LastModifiedAt.ToUnixTimeSeconds());
        foreach (var name in SqsQueueSettings.SettableNames.Concat(settings.FifoQueue ? SqsQueueSettings.FifoNames : []))
        {
            if (settings.Get(name) is { } value)
            {
                all[name] = value;
            }
        }

        if (names is null || names.Count == 0)
        {
            return new Dictionary<string, string>();
        }

        if (names.Contains("All"))
        {
            return all;
        }

        var selected = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var name in names)
        {
            if (all.TryGetValue(name, out var value))
            {
                selected[name] = value;
            }
            else if (!SqsQueueSettings.SettableNames.Contains(name) && name is not ("FifoQueue" or "ContentBasedDeduplication"
                         or "KmsMasterKeyId" or "KmsDataKeyReusePeriodSeconds" or "DeduplicationScope" or "FifoThroughputLimit"))
            {
                throw SqsErrors.InvalidAttributeName($"Unknown Attribute {name}.");
            }
        }

        return selected;
    }

    public void SetQueueAttributes(SqsQueue queue, IReadOnlyDictionary<string, string>? attributes)
    {
        if (attributes is null || attributes.Count == 0)
        {
            throw SqsErrors.MissingParameter("Attributes");
        }

        var updated = queue.Settings.Clone();
        foreach (var (name, value) in attributes)
        {
            if (name == "FifoQueue")
            {
                throw SqsErrors.InvalidAttributeName("Attribute FifoQueue can only be set when the queue is created.");
            }

            updated.Apply(name, value, IsFifo);
        }

        if (updated.FifoThroughputLimit == "perMessageGroupId" && updated.DeduplicationScope != "messageGroup")
        {
            throw SqsErrors.InvalidAttributeValue("Invalid value for the parameter FifoThroughputLimit. Reason: perMessageGroupId is valid only when DeduplicationScope is messageGroup.");
        }

        queue.ReplaceSettings(updated, context.Now);
    }

    public void PurgeQueue(SqsQueue queue) => queue.Purge(context.Now);

    public SendMessageOutput SendMessage(SqsQueue queue, SendMessageInput input)
    {
        var settings = queue.Settings;
        if (input.MessageBody is null)
        {
            throw SqsErrors.MissingParameter("MessageBody");
        }

        if (input.MessageBody.Length == 0)
        {
            throw SqsErrors.InvalidParameterValue("The request must contain a non-empty message body (at least one character).");
        }

        if (MessageContentRules.FindInvalidCharacter(input.MessageBody) is { } invalid)
        {
            throw SqsErrors.InvalidMessageContents(
                $"Invalid binary character '#x{invalid:X}' was found in the message body, the set of allowed characters is #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF");
        }

        if (input.DelaySeconds is < 0 or > SqsQueueSettings.MaxDelaySeconds)
        {
            throw SqsErrors.InvalidParameterValue("DelaySeconds", input.DelaySeconds?.ToString(CultureInfo.InvariantCulture),
                $"DelaySeconds must be >= 0 and <= {SqsQueueSettings.MaxDelaySeconds}.");
        }

        if (settings.FifoQueue)
        {
            ValidateFifoSend(input, settings);
        }
        else if (input.MessageDeduplicationId is not null)
        {
            throw SqsErrors.InvalidParameterValue(
                "The request includes the MessageDeduplicationId parameter, which is only valid for FIFO queues; this queue is a standard queue.");
        }

        if (input.MessageGroupId is { } groupId && !IsValidFifoId(groupId))
        {
            throw SqsErrors.InvalidParameterValue("MessageGroupId", groupId,
                "MessageGroupId can be 1 to 128 alphanumeric or punctuation characters.");
        }

        var attributes = input.MessageAttributes ?? new Dictionary<string, MessageAttribute>();
        ValidateMessageAttributes(attributes);
        var systemAttributes = input.MessageSystemAttributes ?? new Dictionary<string, MessageAttribute>();
        ValidateSystemAttributes(systemAttributes);

        var size = MessageSize(input.MessageBody, attributes);
        if (size > settings.MaximumMessageSize)
        {
            throw SqsErrors.InvalidParameterValue(
                $"One or more parameters are invalid. Reason: Message must be shorter than {settings.MaximumMessageSize} bytes.");
        }

        var now = context.Now;
        var message = new SqsMessage
        {
            MessageId = Guid.NewGuid().ToString(),
            Body = input.MessageBody,
            Attributes = new Dictionary<string, MessageAttribute>(attributes, StringComparer.Ordinal),
            AwsTraceHeader = systemAttributes.TryGetValue("AWSTraceHeader", out var trace) ? trace.StringValue : null,
            MessageGroupId = input.MessageGroupId,
            MessageDeduplicationId = settings.FifoQueue ? DeduplicationId(input.MessageDeduplicationId, input.MessageBody) : null,
            SenderId = context.AccountId,
            SentAt = now,
            VisibleAt = now + TimeSpan.FromSeconds(input.DelaySeconds ?? settings.DelaySeconds),
        };
        var (messageId, sequenceNumber) = queue.Enqueue(message, now);
        return new SendMessageOutput(
            messageId,
            MessageDigest.OfBody(message.Body),
            MessageDigest.OfAttributes(attributes),
            MessageDigest.OfAttributes(systemAttributes),
            sequenceNumber);
    }

    /// <summary>
    /// What SQS requires of a send to a FIFO queue: a MessageGroupId; a MessageDeduplicationId unless the queue has
    /// content-based deduplication; no per-message DelaySeconds (only the queue's own delay applies).
    /// </summary>
    private static void ValidateFifoSend(SendMessageInput input, SqsQueueSettings settings)
    {
        if (input.MessageGroupId is null)
        {
            throw SqsErrors.MissingParameter("MessageGroupId");
        }

        if (input.DelaySeconds is { } delay)
        {
            throw SqsErrors.InvalidParameterValue("DelaySeconds", delay.ToString(CultureInfo.InvariantCulture),
                "The request include parameter that is not valid for this queue type");
        }

        if (input.MessageDeduplicationId is null && !settings.ContentBasedDeduplication)
        {
            throw SqsErrors.InvalidParameterValue(
                "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly");
        }

        if (input.MessageDeduplicationId is { } deduplicationId && !IsValidFifoId(deduplicationId))
        {
            throw SqsErrors.InvalidParameterValue("MessageDeduplicationId", deduplicationId,
                "MessageDeduplicationId can be 1 to 128 alphanumeric or punctuation characters.");
        }
    }

    /// <summary>Message group and deduplication ids: 1 to 128 characters, ASCII letters, digits and punctuation (<c>!"#$%&amp;'()*+,-./:;&lt;=&gt;?@[\]^_`{|}~</c>).</summary>
    public static bool IsValidFifoId(string id) =>
        id.Length is > 0 and <= 128 && id.All(c => c is > ' ' and < (char)127);

    /// <summary>The given id, else (content-based deduplication) the hex SHA-256 of the body.</summary>
    private static string DeduplicationId(string? given, string body) =>
        given ?? Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(body)));

    /// <summary>
    /// Delivery from an SNS subscription: the queue must exist and its access policy must let the topic send
    /// (<see cref="QueuePolicyEvaluator"/>); the queue's default delay applies.
    /// </summary>
    /// <remarks>
    /// From a FIFO topic, <paramref name="messageGroupId"/> and <paramref name="deduplicationId"/> come with the message: a
    /// FIFO queue keeps the group and deduplicates on the id (a standard queue ignores both).
    /// </remarks>
    public TopicDeliveryOutcome DeliverFromTopic(
        string queueArn, string topicArn, string body, IReadOnlyDictionary<string, MessageAttribute> attributes, string senderId,
        string? messageGroupId = null, string? deduplicationId = null)
    {
        if (FindByArn(queueArn) is not { } queue)
        {
            return TopicDeliveryOutcome.QueueDoesNotExist;
        }

        if (!QueuePolicyEvaluator.AllowsTopicDelivery(queue.Settings.Policy, queue.Arn, topicArn, context.AccountId))
        {
            return TopicDeliveryOutcome.DeniedByQueuePolicy;
        }

        var now = context.Now;
        var fifo = queue.Settings.FifoQueue;
        if (fifo && messageGroupId is null)
        {
            // Only a FIFO topic can deliver to a FIFO queue, and it always passes the group (Subscribe enforces the pairing).
            return TopicDeliveryOutcome.QueueDoesNotExist;
        }

        queue.Enqueue(new SqsMessage
        {
            MessageId = Guid.NewGuid().ToString(),
            Body = body,
            Attributes = new Dictionary<string, MessageAttribute>(attributes, StringComparer.Ordinal),
            MessageGroupId = fifo ? messageGroupId : null,
            MessageDeduplicationId = fifo ? deduplicationId : null,
            SenderId = senderId,
            SentAt = now,
            VisibleAt = now + TimeSpan.FromSeconds(queue.Settings.DelaySeconds),
        }, now);
        return TopicDeliveryOutcome.Delivered;
    }

    /// <summary>
    /// Receives up to <paramref name="maxMessages"/>; with a wait time, returns as soon as at least one message is
    /// available, or empty when the wait time passes.
    /// </summary>
    /// <remarks>
    /// <paramref name="clientGone"/> fires when the client goes away (its connection closed). As on SQS, that does not
    /// withdraw the poll: it waits on until its wait time ends and may still take messages, which nobody gets; they stay
    /// invisible for the poll's visibility timeout and their receive count goes up. Only <paramref name="stopping"/>
    /// (the endpoint stops listening: an outage) ends the wait early.
    /// </remarks>
    public async Task<IReadOnlyList<ReceivedMessage>> ReceiveMessageAsync(
        SqsQueue queue, int maxMessages, int? visibilityTimeout, int waitTimeSeconds, CancellationToken clientGone, CancellationToken stopping)
    {
        var deadline = context.Now + TimeSpan.FromSeconds(waitTimeSeconds);
        if (waitTimeSeconds == 0)
        {
            return await PollAsync(queue, maxMessages, visibilityTimeout, deadline, stopping).ConfigureAwait(false);
        }

        Interlocked.Increment(ref _waitingPolls);
        var abandonment = clientGone.Register(() =>
        {
            Interlocked.Increment(ref _abandonedPolls);
            LogPollAbandoned(queue.Name, deadline);
        });
        try
        {
            var messages = await PollAsync(queue, maxMessages, visibilityTimeout, deadline, stopping).ConfigureAwait(false);
            if (messages.Count > 0 && clientGone.IsCancellationRequested)
            {
                LogTakenByAbandonedPoll(queue.Name, messages.Count, visibilityTimeout ?? queue.Settings.VisibilityTimeout);
            }

            return messages;
        }
        finally
        {
            await abandonment.DisposeAsync().ConfigureAwait(false);
            Interlocked.Decrement(ref _waitingPolls);
        }
    }

    private async Task<IReadOnlyList<ReceivedMessage>> PollAsync(
        SqsQueue queue, int maxMessages, int? visibilityTimeout, DateTimeOffset deadline, CancellationToken stopping)
    {
        while (true)
        {
            var now = context.Now;
            var scan = queue.Receive(maxMessages, visibilityTimeout, now, FindByArn);
            foreach (var moved in scan.DeadLetterMoves)
            {
                scan.DeadLetterQueue!.AcceptDeadLetter(moved, queue.Arn, now);
                LogMovedToDeadLetterQueue(moved.MessageId, queue.Name, scan.DeadLetterQueue.Name, moved.ReceiveCount);
            }

            if (scan.Messages.Count > 0 || now >= deadline)
            {
                return scan.Messages;
            }

            if (scan.DeadLetterMoves.Count > 0)
            {
                continue;
            }

            var wake = deadline;
            if (scan.NextVisibleAt is { } nextVisible && nextVisible < wake)
            {
                wake = nextVisible;
            }

            var delay = wake - now;
            if (delay > TimeSpan.Zero)
            {
                try
                {
                    await scan.Changed.WaitAsync(delay, context.Time, stopping).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    // Deadline or a message's visibility ended: scan again.
                }
            }
        }
    }

    public void DeleteMessage(SqsQueue queue, string? receiptHandle)
    {
        var messageId = ParseReceiptHandle(queue, receiptHandle);
        queue.Delete(messageId, receiptHandle!);
    }

    public void ChangeMessageVisibility(SqsQueue queue, string? receiptHandle, int? visibilityTimeout)
    {
        var messageId = ParseReceiptHandle(queue, receiptHandle);
        if (visibilityTimeout is null)
        {
            throw SqsErrors.MissingParameter("VisibilityTimeout");
        }

        if (visibilityTimeout is < 0 or > SqsQueueSettings.MaxVisibilityTimeout)
        {
            throw SqsErrors.InvalidParameterValue("VisibilityTimeout", visibilityTimeout.Value.ToString(CultureInfo.InvariantCulture),
                $"VisibilityTimeout must be an integer between 0 and {SqsQueueSettings.MaxVisibilityTimeout}.");
        }

        queue.ChangeVisibility(messageId, receiptHandle!, visibilityTimeout.Value, context.Now);
    }

    /// <summary>Injected fault: the in-flight messages of a queue become visible now; see <see cref="LocalAwsEndpoint.ExpireVisibility"/>.</summary>
    public int ExpireVisibility(string queueName) =>
        _queues.TryGetValue(queueName, out var queue)
            ? queue.ExpireVisibility(context.Now)
            : throw new InvalidOperationException($"Queue '{queueName}' does not exist.");

    /// <summary>Body plus every attribute's name, data type and value, in bytes: what the size limit counts.</summary>
    public static int MessageSize(string body, IReadOnlyDictionary<string, MessageAttribute> attributes) =>
        Encoding.UTF8.GetByteCount(body) + attributes.Sum(pair => Encoding.UTF8.GetByteCount(pair.Key) + pair.Value.ValueSize);

    public static void ValidateMessageAttributes(IReadOnlyDictionary<string, MessageAttribute> attributes)
    {
        if (attributes.Count > MaxMessageAttributes)
        {
            throw SqsErrors.InvalidParameterValue(
                $"Number of message attributes [{attributes.Count}] exceeds the allowed maximum [{MaxMessageAttributes}].");
        }

        foreach (var (name, attribute) in attributes)
        {
            if (MessageContentRules.CheckAttributeName(name) is { } reason)
            {
                throw SqsErrors.InvalidParameterValue(reason);
            }

            ValidateAttributeValue(name, attribute);
        }
    }

    private static void ValidateAttributeValue(string name, MessageAttribute attribute)
    {
        if (string.IsNullOrEmpty(attribute.DataType))
        {
            throw SqsErrors.InvalidParameterValue($"The message attribute '{name}' must contain non-empty message attribute type.");
        }

        if (attribute.DataType.Length > MessageContentRules.MaxDataTypeLength)
        {
            throw SqsErrors.InvalidParameterValue($"Message attribute type of '{name}' is longer than {MessageContentRules.MaxDataTypeLength} characters.");
        }

        var baseType = MessageAttribute.BaseType(attribute.DataType);
        if (baseType is not ("String" or "Number" or "Binary") || attribute.DataType.EndsWith('.'))
        {
            throw SqsErrors.InvalidParameterValue(
                $"The message attribute '{name}' has an invalid message attribute type '{attribute.DataType}', the set of supported type prefixes is Binary, Number, and String.");
        }

        if (baseType == "Binary")
        {
            if (attribute.BinaryValue is null || attribute.BinaryValue.Length == 0)
            {
                throw SqsErrors.InvalidParameterValue($"The message attribute '{name}' with type 'Binary' must use field 'Binary'.");
            }

            if (attribute.StringValue is not null)
            {
                throw SqsErrors.InvalidParameterValue($"The message attribute '{name}' with type 'Binary' must not use field 'String'.");
            }

            return;
        }

        if (string.IsNullOrEmpty(attribute.StringValue))
        {
            throw SqsErrors.InvalidParameterValue($"The message attribute '{name}' must contain non-empty message attribute value for message attribute type '{baseType}'.");
        }

        if (attribute.BinaryValue is not null)
        {
            throw SqsErrors.InvalidParameterValue($"The message attribute '{name}' with type '{baseType}' must not use field 'Binary'.");
        }

        if (MessageContentRules.FindInvalidCharacter(attribute.StringValue) is { } invalid)
        {
            throw SqsErrors.InvalidParameterValue(
                $"Invalid binary character '#x{invalid:X}' was found in the message attribute '{name}' value, the set of allowed characters is #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF");
        }

        if (baseType == "Number" && !MessageContentRules.IsValidNumber(attribute.StringValue))
        {
            throw SqsErrors.InvalidParameterValue(
                $"Can't cast the value of message (user) attribute '{name}' to a number: '{attribute.StringValue}' (up to 38 digits of precision, between 10^-128 and 10^+126).");
        }
    }

    private static void ValidateSystemAttributes(IReadOnlyDictionary<string, MessageAttribute> attributes)
    {
        foreach (var (name, attribute) in attributes)
        {
            if (name != "AWSTraceHeader")
            {
                throw SqsErrors.InvalidParameterValue($"Message system attribute name '{name}' is invalid: only AWSTraceHeader can be set.");
            }

            if (attribute.DataType != "String" || string.IsNullOrEmpty(attribute.StringValue))
            {
                throw SqsErrors.InvalidParameterValue("Message system attribute AWSTraceHeader must be a non-empty value of type String.");
            }
        }
    }

    private static string ParseReceiptHandle(SqsQueue queue, string? receiptHandle)
    {
        if (string.IsNullOrEmpty(receiptHandle))
        {
            throw SqsErrors.MissingParameter("ReceiptHandle");
        }

        if (!SqsReceiptHandle.TryParse(receiptHandle, out var queueArn, out var messageId) || queueArn != queue.Arn)
        {
            throw SqsErrors.ReceiptHandleIsInvalid(receiptHandle);
        }

        return messageId;
    }

    /// <summary>Validates the name against the queue type; returns true for a FIFO queue (<c>FifoQueue=true</c>).</summary>
    private static bool ValidateQueueName(string queueName, IReadOnlyDictionary<string, string>? attributes)
    {
        var fifo = attributes is not null && attributes.TryGetValue("FifoQueue", out var flag) && string.Equals(flag, "true", StringComparison.OrdinalIgnoreCase);
        var stem = fifo && queueName.EndsWith(".fifo", StringComparison.Ordinal) ? queueName[..^5] : queueName;
        if (fifo && stem.Length == queueName.Length)
        {
            throw SqsErrors.InvalidParameterValue(
                "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length.");
        }

        if (queueName.Length > 80 || stem.Length == 0 || !stem.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
        {
            throw SqsErrors.InvalidParameterValue(fifo
                ? "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length."
                : "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length");
        }

        return fifo;
    }

    private static string Text(long value) => value.ToString(CultureInfo.InvariantCulture);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Created queue {QueueName}")]
    private partial void LogQueueCreated(string queueName);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Deleted queue {QueueName}")]
    private partial void LogQueueDeleted(string queueName);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Moved message {MessageId} from {SourceQueue} to dead-letter queue {DeadLetterQueue} after {ReceiveCount} receives")]
    private partial void LogMovedToDeadLetterQueue(string messageId, string sourceQueue, string deadLetterQueue, int receiveCount);

    [LoggerMessage(Level = LogLevel.Debug, Message = "The client of a ReceiveMessage on {QueueName} went away; the long poll waits on until {Deadline:O}, as on SQS")]
    private partial void LogPollAbandoned(string queueName, DateTimeOffset deadline);

    [LoggerMessage(Level = LogLevel.Information,
        Message = "A long poll on {QueueName} whose client went away took {Count} message(s) nobody gets: invisible for {VisibilityTimeout} s, receive count increased")]
    private partial void LogTakenByAbandonedPoll(string queueName, int count, int visibilityTimeout);
}
