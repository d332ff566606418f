using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Messaging.LocalAws.Protocol;
using Messaging.LocalAws.Sqs;
using Microsoft.Extensions.Logging;

namespace Messaging.LocalAws.Sns;

internal sealed record PublishInput(
    string? Message,
    string? Subject,
    string? MessageStructure,
    IReadOnlyDictionary<string, MessageAttribute> MessageAttributes,
    string? MessageGroupId,
    string? MessageDeduplicationId);

/// <summary>The SNS half of the endpoint: standard topics, SQS subscriptions and fan-out into the SQS half.</summary>
internal sealed partial class SnsBroker(LocalAwsContext context, SqsBroker sqs)
{
    public const int MaxMessageSize = 262_144;

    /// <summary>SNS documents that raw delivery to SQS carries at most 10 attributes; more are discarded as client-side errors.</summary>
    public const int MaxRawDeliveryAttributes = 10;

    private const int PageSize = 100;

    private static readonly JsonSerializerOptions EnvelopeJson = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private static readonly HashSet<string> TopicAttributeNames = new(StringComparer.Ordinal)
    {
        "DisplayName", "Policy", "DeliveryPolicy", "TracingConfig", "SignatureVersion", "DataProtectionPolicy",
    };

    private readonly ConcurrentDictionary<string, SnsTopic> _topics = new(StringComparer.Ordinal);
    private readonly Lock _createLock = new();
    private readonly ILogger _logger = context.LoggerFactory.CreateLogger<SnsBroker>();

    public string AccountId => context.AccountId;

    public string ArnOf(string topicName) => $"arn:aws:sns:{context.Region}:{context.AccountId}:{topicName}";

    public string CreateTopic(string? name, IReadOnlyDictionary<string, string> attributes, IReadOnlyDictionary<string, string> tags)
    {
        if (string.IsNullOrEmpty(name))
        {
            throw SnsErrors.MissingParameter("Name");
        }

        var fifo = attributes.TryGetValue("FifoTopic", out var fifoFlag) && string.Equals(fifoFlag, "true", StringComparison.OrdinalIgnoreCase);
        var stem = name.EndsWith(".fifo", StringComparison.Ordinal) ? name[..^5] : name;
        if (fifo != (stem.Length != name.Length))
        {
            throw SnsErrors.InvalidParameter(fifo
                ? "Fifo Topic names must end with .fifo and must be made up of only uppercase and lowercase ASCII letters, numbers, underscores, and hyphens, and must be between 1 and 256 characters long."
                : "Topic Name");
        }

        if (name.Length > 256 || stem.Length == 0 || !stem.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
        {
            throw SnsErrors.InvalidParameter(
                "Topic Name Reason: must be made up of only uppercase and lowercase ASCII letters, numbers, underscores, and hyphens, and must be between 1 and 256 characters long.");
        }

        var validated = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in attributes)
        {
            validated[key] = ValidateTopicAttribute(key, value, fifo, creating: true);
        }

        if (fifo)
        {
            validated["FifoTopic"] = "true";
            validated.TryAdd("ContentBasedDeduplication", "false");
        }

        lock (_createLock)
        {
            if (_topics.TryGetValue(name, out var existing))
            {
                lock (existing.Sync)
                {
                    foreach (var (key, value) in validated)
                    {
                        if (!existing.Attributes.TryGetValue(key, out var current) || current != value)
                        {
                            throw SnsErrors.InvalidParameter("Attributes Reason: Topic already exists with different attributes");
                        }
                    }

                    foreach (var (key, value) in tags)
                    {
                        if (!existing.Tags.TryGetValue(key, out var current) || current != value)
                        {
                            throw SnsErrors.InvalidParameter("Tags Reason: Topic already exists with different tags");
                        }
                    }
                }

                return existing.Arn;
            }

            var topic = new SnsTopic(name, ArnOf(name), validated, tags);
            _topics[name] = topic;
            LogTopicCreated(name);
            return topic.Arn;
        }
    }

    public SnsTopic GetTopic(string? topicArn, string parameterName = "TopicArn")
    {
        if (string.IsNullOrEmpty(topicArn))
        {
            throw SnsErrors.MissingParameter(parameterName);
        }

        var parts = topicArn.Split(':');
        if (parts.Length != 6 || parts[0] != "arn" || parts[2] != "sns" || parts[5].Length == 0)
        {
            throw SnsErrors.InvalidParameter($"{parameterName} Reason: '{topicArn}' is not a valid topic ARN");
        }

        if (parts[3] != context.Region || parts[4] != context.AccountId || !_topics.TryGetValue(parts[5], out var topic))
        {
            throw SnsErrors.TopicNotFound();
        }

        return topic;
    }

    public IReadOnlyDictionary<string, string> GetTopicAttributes(SnsTopic topic)
    {
        lock (topic.Sync)
        {
            var result = new Dictionary<string, string>(StringComparer.Ordinal)
            {
                ["TopicArn"] = topic.Arn,
                ["Owner"] = context.AccountId,
                ["DisplayName"] = string.Empty,
                ["Policy"] = DefaultTopicPolicy(topic.Arn),
                ["SubscriptionsConfirmed"] = topic.Subscriptions.Count.ToString(CultureInfo.InvariantCulture),
                ["SubscriptionsPending"] = "0",
                ["SubscriptionsDeleted"] = "0",
                ["EffectiveDeliveryPolicy"] = DefaultDeliveryPolicy,
            };
            foreach (var (key, value) in topic.Attributes)
            {
                result[key] = value;
            }

            return result;
        }
    }

    public void SetTopicAttribute(SnsTopic topic, string? name, string? value)
    {
        if (string.IsNullOrEmpty(name))
        {
            throw SnsErrors.MissingParameter("AttributeName");
        }

        var validated = ValidateTopicAttribute(name, value ?? string.Empty, topic.IsFifo, creating: false);
        lock (topic.Sync)
        {
            topic.Attributes[name] = validated;
        }
    }

    /// <summary>Deleting a topic that does not exist is not an error (DeleteTopic API reference).</summary>
    public void DeleteTopic(string? topicArn)
    {
        SnsTopic topic;
        try
        {
            topic = GetTopic(topicArn);
        }
        catch (AwsServiceException error) when (error.Code == "NotFound")
        {
            return;
        }

        lock (_createLock)
        {
            _topics.TryRemove(new KeyValuePair<string, SnsTopic>(topic.Name, topic));
        }

        lock (topic.Sync)
        {
            topic.Subscriptions.Clear();
        }
    }

    public (IReadOnlyList<string> TopicArns, string? NextToken) ListTopics(string? nextToken)
    {
        var arns = _topics.Values.Select(topic => topic.Arn).OrderBy(arn => arn, StringComparer.Ordinal).ToList();
        return Page(arns, nextToken);
    }

    public string Subscribe(string? topicArn, string? protocol, string? endpoint, IReadOnlyDictionary<string, string> attributes)
    {
        var topic = GetTopic(topicArn);
        if (string.IsNullOrEmpty(protocol))
        {
            throw SnsErrors.MissingParameter("Protocol");
        }

        if (protocol != "sqs")
        {
            throw SnsErrors.InvalidParameter($"Protocol Reason: '{protocol}' is not supported by this local endpoint; it delivers to 'sqs' subscriptions only.");
        }

        if (string.IsNullOrEmpty(endpoint))
        {
            throw SnsErrors.InvalidParameter("Endpoint Reason: An SQS subscription needs the queue ARN as its endpoint");
        }

        var endpointParts = endpoint.Split(':');
        if (endpointParts.Length != 6 || endpointParts[0] != "arn" || endpointParts[2] != "sqs" || endpointParts[5].Length == 0)
        {
            throw SnsErrors.InvalidParameter($"SQS endpoint ARN Reason: '{endpoint}' is not a queue ARN");
        }

        // A FIFO topic delivers to FIFO and standard queues; a standard topic cannot deliver to a FIFO queue.
        if (!topic.IsFifo && endpointParts[5].EndsWith(".fifo", StringComparison.Ordinal))
        {
            throw SnsErrors.InvalidParameter("Invalid SQS FIFO queue endpoint: a standard topic cannot deliver to a FIFO queue; subscribe the queue to a FIFO topic");
        }

        var validated = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in attributes)
        {
            validated[key] = ValidateSubscriptionAttribute(key, value);
        }

        lock (topic.Sync)
        {
            var existing = topic.Subscriptions.FirstOrDefault(subscription => subscription.Protocol == protocol && subscription.Endpoint == endpoint);
            if (existing is not null)
            {
                foreach (var (key, value) in validated)
                {
                    var current = existing.Attributes.TryGetValue(key, out var stored) ? stored : DefaultSubscriptionAttribute(key);
                    if (!string.Equals(current, value, StringComparison.Ordinal))
                    {
                        throw SnsErrors.InvalidParameter("Attributes Reason: Subscription already exists with different attributes");
                    }
                }

                return existing.Arn;
            }

            var subscription = new SnsSubscription($"{topic.Arn}:{Guid.NewGuid()}", topic.Arn, protocol, endpoint, validated);
            topic.Subscriptions.Add(subscription);
            LogSubscribed(subscription.Arn, endpoint);
            return subscription.Arn;
        }
    }

    public void Unsubscribe(string? subscriptionArn)
    {
        var (topic, subscription) = GetSubscription(subscriptionArn);
        lock (topic.Sync)
        {
            topic.Subscriptions.Remove(subscription);
        }
    }

    public IReadOnlyDictionary<string, string> GetSubscriptionAttributes(string? subscriptionArn)
    {
        var (topic, subscription) = GetSubscription(subscriptionArn);
        lock (topic.Sync)
        {
            var result = new Dictionary<string, string>(StringComparer.Ordinal)
            {
                ["SubscriptionArn"] = subscription.Arn,
                ["TopicArn"] = subscription.TopicArn,
                ["Owner"] = context.AccountId,
                ["Protocol"] = subscription.Protocol,
                ["Endpoint"] = subscription.Endpoint,
                ["ConfirmationWasAuthenticated"] = "true",
                ["PendingConfirmation"] = "false",
                ["RawMessageDelivery"] = "false",
            };
            foreach (var (key, value) in subscription.Attributes)
            {
                result[key] = value;
            }

            return result;
        }
    }

    public void SetSubscriptionAttribute(string? subscriptionArn, string? name, string? value)
    {
        var (topic, subscription) = GetSubscription(subscriptionArn);
        if (string.IsNullOrEmpty(name))
        {
            throw SnsErrors.MissingParameter("AttributeName");
        }

        var validated = ValidateSubscriptionAttribute(name, value ?? string.Empty);
        lock (topic.Sync)
        {
            if (validated.Length == 0 && name == "RedrivePolicy")
            {
                subscription.Attributes.Remove(name);
            }
            else
            {
                subscription.Attributes[name] = validated;
            }
        }
    }

    public (IReadOnlyList<SnsSubscription> Subscriptions, string? NextToken) ListSubscriptions(SnsTopic? topic, string? nextToken)
    {
        var all = (topic is null ? _topics.Values : [topic])
            .SelectMany(item =>
            {
                lock (item.Sync)
                {
                    return item.Subscriptions.ToList();
                }
            })
            .OrderBy(subscription => subscription.Arn, StringComparer.Ordinal)
            .ToList();
        var (arns, token) = Page(all.Select(subscription => subscription.Arn).ToList(), nextToken);
        var selected = arns.ToHashSet(StringComparer.Ordinal);
        return (all.Where(subscription => selected.Contains(subscription.Arn)).ToList(), token);
    }

    /// <summary>Validates a publish request (everything but the topic) and returns the message size in bytes.</summary>
    public static int ValidatePublish(PublishInput input)
    {
        if (string.IsNullOrEmpty(input.Message))
        {
            throw SnsErrors.InvalidParameter("Empty message");
        }

        if (input.Subject is not null
            && (input.Subject.Length is 0 or > 100 || input.Subject.Any(char.IsControl) || !(char.IsLetterOrDigit(input.Subject[0]) || char.IsPunctuation(input.Subject[0]))))
        {
            throw SnsErrors.InvalidParameter(
                "Subject Reason: must be 1 to 100 characters without line breaks or control characters, starting with a letter, number or punctuation mark");
        }

        if (input.MessageGroupId is { } groupId && !SqsBroker.IsValidFifoId(groupId))
        {
            throw SnsErrors.InvalidParameter("MessageGroupId Reason: can be 1 to 128 alphanumeric or punctuation characters");
        }

        if (input.MessageDeduplicationId is { } deduplicationId && !SqsBroker.IsValidFifoId(deduplicationId))
        {
            throw SnsErrors.InvalidParameter("MessageDeduplicationId Reason: can be 1 to 128 alphanumeric or punctuation characters");
        }

        if (input.MessageStructure is not null)
        {
            if (input.MessageStructure != "json")
            {
                throw SnsErrors.InvalidParameter("MessageStructure Reason: the only supported value is 'json'");
            }

            _ = MessageForSqs(input.Message, input.MessageStructure);
        }

        foreach (var (name, attribute) in input.MessageAttributes)
        {
            ValidateAttribute(name, attribute);
        }

        var size = SqsBroker.MessageSize(input.Message, input.MessageAttributes);
        if (size > MaxMessageSize)
        {
            throw SnsErrors.InvalidParameter("Message too long");
        }

        return size;
    }

    /// <summary>What a FIFO topic requires of a publish, and what a standard topic refuses.</summary>
    private static void ValidateForTopic(SnsTopic topic, PublishInput input, bool contentBasedDeduplication)
    {
        if (!topic.IsFifo)
        {
            if (input.MessageGroupId is not null)
            {
                throw SnsErrors.InvalidParameter("MessageGroupId Reason: The request includes MessageGroupId parameter that is not valid for this topic type");
            }

            if (input.MessageDeduplicationId is not null)
            {
                throw SnsErrors.InvalidParameter("MessageDeduplicationId Reason: The request includes MessageDeduplicationId parameter that is not valid for this topic type");
            }

            return;
        }

        if (input.MessageGroupId is null)
        {
            throw SnsErrors.InvalidParameter("The MessageGroupId parameter is required for FIFO topics");
        }

        if (input.MessageDeduplicationId is null && !contentBasedDeduplication)
        {
            throw SnsErrors.InvalidParameter("The topic should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly");
        }
    }

    /// <summary>Publishes to every subscription of the topic; returns the SNS message id.</summary>
    public string Publish(SnsTopic topic, PublishInput input) => PublishWithSequence(topic, input).MessageId;

    /// <summary>
    /// Publishes to every subscription of the topic; returns the SNS message id and, on a FIFO topic, the sequence number.
    /// A FIFO topic drops a message whose deduplication id it accepted within the last 5 minutes (the publish succeeds with
    /// the first message's id and number, nothing is delivered); its subscriptions get the group and deduplication ids.
    /// </summary>
    public (string MessageId, string? SequenceNumber) PublishWithSequence(SnsTopic topic, PublishInput input)
    {
        ValidatePublish(input);
        var messageId = Guid.NewGuid().ToString();
        string? sequenceNumber = null;
        string? deduplicationId = null;
        List<(SnsSubscription Subscription, bool Raw, string? DeadLetterTargetArn)> targets;
        string signatureVersion;
        lock (topic.Sync)
        {
            var contentBased = topic.Attributes.TryGetValue("ContentBasedDeduplication", out var cbd) && cbd == "true";
            ValidateForTopic(topic, input, contentBased);
            if (topic.IsFifo)
            {
                deduplicationId = input.MessageDeduplicationId
                    ?? Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(input.Message!)));
                var now = context.Now;
                var key = topic.Attributes.GetValueOrDefault("FifoThroughputScope") == "MessageGroup" ? $"{input.MessageGroupId}\n{deduplicationId}" : deduplicationId;
                foreach (var stale in topic.Deduplication.Where(pair => now - pair.Value.FirstPublishedAt >= SqsQueue.DeduplicationInterval).Select(pair => pair.Key).ToList())
                {
                    topic.Deduplication.Remove(stale);
                }

                if (topic.Deduplication.TryGetValue(key, out var first))
                {
                    return (first.MessageId, first.SequenceNumber);
                }

                sequenceNumber = (++topic.Sequence + 10_000_000_000_000_000_000m).ToString("0", CultureInfo.InvariantCulture);
                topic.Deduplication[key] = (now, messageId, sequenceNumber);
            }

            targets = topic.Subscriptions.Select(subscription => (subscription, subscription.RawMessageDelivery, DeadLetterTargetArn(subscription))).ToList();
            signatureVersion = topic.Attributes.GetValueOrDefault("SignatureVersion", "1");
        }

        var message = MessageForSqs(input.Message!, input.MessageStructure);
        // Message attributes are delivered only for the String message structure, not for JSON.
        var attributes = input.MessageStructure is null ? input.MessageAttributes : new Dictionary<string, MessageAttribute>();
        var timestamp = context.Now;
        foreach (var (subscription, raw, deadLetterTargetArn) in targets)
        {
            var noAttributes = new Dictionary<string, MessageAttribute>();
            string Enveloped() => Envelope(topic.Arn, subscription.Arn, messageId, input.Subject, message, attributes, timestamp, signatureVersion);

            // Client-side errors (too many attributes for raw delivery, a deleted queue, a queue policy that
            // refuses the topic) are not retried: the copy goes to the subscription's dead-letter queue if it
            // has one, else it is discarded.
            TopicDeliveryOutcome outcome;
            if (raw && attributes.Count > MaxRawDeliveryAttributes)
            {
                LogRawDeliveryDiscarded(messageId, subscription.Arn, attributes.Count);
                outcome = TopicDeliveryOutcome.TooManyAttributesForRawDelivery;
            }
            else
            {
                outcome = sqs.DeliverFromTopic(subscription.Endpoint, topic.Arn, raw ? message : Enveloped(), raw ? attributes : noAttributes, context.AccountId,
                    input.MessageGroupId, deduplicationId);
                if (outcome != TopicDeliveryOutcome.Delivered)
                {
                    LogDeliveryFailed(messageId, subscription.Arn, subscription.Endpoint, outcome);
                }
            }

            if (outcome != TopicDeliveryOutcome.Delivered && deadLetterTargetArn is not null)
            {
                // Raw copies keep their form unless their attributes cannot travel as SQS attributes; then the
                // notification envelope carries them.
                var rawCopy = raw && outcome != TopicDeliveryOutcome.TooManyAttributesForRawDelivery;
                var deadLettered = sqs.DeliverFromTopic(deadLetterTargetArn, topic.Arn, rawCopy ? message : Enveloped(), rawCopy ? attributes : noAttributes, context.AccountId,
                    input.MessageGroupId, deduplicationId);
                LogDeadLettered(messageId, subscription.Arn, deadLetterTargetArn, deadLettered);
            }
        }

        return (messageId, sequenceNumber);
    }

    private string Envelope(
        string topicArn, string subscriptionArn, string messageId, string? subject, string message,
        IReadOnlyDictionary<string, MessageAttribute> attributes, DateTimeOffset timestamp, string signatureVersion)
    {
        var envelope = new Dictionary<string, object>
        {
            ["Type"] = "Notification",
            ["MessageId"] = messageId,
            ["TopicArn"] = topicArn,
        };
        if (subject is not null)
        {
            envelope["Subject"] = subject;
        }

        envelope["Message"] = message;
        envelope["Timestamp"] = timestamp.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture);
        envelope["SignatureVersion"] = signatureVersion;
        // Not a verifiable signature: the endpoint has no SNS signing key. It is a digest of the signed fields,
        // so the field has the documented base64 shape and differs per message.
        envelope["Signature"] = Convert.ToBase64String(SHA256.HashData(Encoding.UTF8.GetBytes($"{messageId}\n{message}\n{topicArn}")));
        envelope["SigningCertURL"] = new Uri(context.ServiceUrl, "SimpleNotificationService-local.pem").ToString();
        envelope["UnsubscribeURL"] = $"{context.ServiceUrl}?Action=Unsubscribe&SubscriptionArn={Uri.EscapeDataString(subscriptionArn)}";
        if (attributes.Count > 0)
        {
            envelope["MessageAttributes"] = attributes.ToDictionary(
                pair => pair.Key,
                pair => new Dictionary<string, string>
                {
                    ["Type"] = pair.Value.DataType,
                    ["Value"] = pair.Value.IsBinary ? Convert.ToBase64String(pair.Value.BinaryValue!) : pair.Value.StringValue!,
                },
                StringComparer.Ordinal);
        }

        return JsonSerializer.Serialize(envelope, EnvelopeJson);
    }

    /// <summary>For <c>MessageStructure=json</c>: the "sqs" entry if present, else the required "default" entry.</summary>
    private static string MessageForSqs(string message, string? structure)
    {
        if (structure is null)
        {
            return message;
        }

        try
        {
            using var document = JsonDocument.Parse(message);
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw SnsErrors.InvalidParameter("Message Structure - JSON message body failed to parse");
            }

            if (!document.RootElement.TryGetProperty("default", out var fallback) || fallback.ValueKind != JsonValueKind.String)
            {
                throw SnsErrors.InvalidParameter("Message Structure - No default entry in JSON message body");
            }

            return document.RootElement.TryGetProperty("sqs", out var sqsEntry) && sqsEntry.ValueKind == JsonValueKind.String
                ? sqsEntry.GetString()!
                : fallback.GetString()!;
        }
        catch (JsonException)
        {
            throw SnsErrors.InvalidParameter("Message Structure - JSON message body failed to parse");
        }
    }

    private static void ValidateAttribute(string name, MessageAttribute attribute)
    {
        if (MessageContentRules.CheckAttributeName(name) is { } reason)
        {
            throw SnsErrors.InvalidParameterValue(reason);
        }

        var baseType = MessageAttribute.BaseType(attribute.DataType);
        if (string.IsNullOrEmpty(attribute.DataType) || baseType is not ("String" or "Number" or "Binary") || attribute.DataType.EndsWith('.'))
        {
            throw SnsErrors.InvalidParameterValue(
                $"The message attribute '{name}' has an invalid message attribute type, the set of supported type prefixes is Binary, Number, and String.");
        }

        if (baseType == "Binary")
        {
            if (attribute.BinaryValue is null || attribute.BinaryValue.Length == 0)
            {
                throw SnsErrors.InvalidParameterValue($"The message attribute '{name}' with type 'Binary' must use field 'Binary'.");
            }

            return;
        }

        if (string.IsNullOrEmpty(attribute.StringValue))
        {
            throw SnsErrors.InvalidParameterValue($"The message attribute '{name}' must contain non-empty message attribute value for message attribute type '{baseType}'.");
        }

        if (MessageContentRules.FindInvalidCharacter(attribute.StringValue) is not null)
        {
            throw SnsErrors.InvalidParameterValue($"The message attribute '{name}' contains characters outside the allowed set.");
        }

        if (baseType == "Number" && !MessageContentRules.IsValidNumber(attribute.StringValue))
        {
            throw SnsErrors.InvalidParameterValue($"Could not cast message attribute '{name}' value to number.");
        }

        if (attribute.DataType == "String.Array" && !IsJsonArray(attribute.StringValue))
        {
            throw SnsErrors.InvalidParameterValue($"The message attribute '{name}' of type 'String.Array' must be a JSON array.");
        }
    }

    private static bool IsJsonArray(string value)
    {
        try
        {
            using var document = JsonDocument.Parse(value);
            return document.RootElement.ValueKind == JsonValueKind.Array;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    private static string ValidateTopicAttribute(string name, string value, bool fifo, bool creating)
    {
        switch (name)
        {
            case "FifoTopic" when !creating:
                throw SnsErrors.InvalidParameter("AttributeName Reason: FifoTopic can be set only when the topic is created");
            case "FifoTopic":
                return value.ToLowerInvariant() is "true" or "false"
                    ? value.ToLowerInvariant()
                    : throw SnsErrors.InvalidParameter("AttributeValue Reason: FifoTopic must be true or false");
            case "ContentBasedDeduplication" or "FifoThroughputScope" or "ArchivePolicy" when !fifo:
                throw SnsErrors.InvalidParameter($"AttributeName Reason: {name} applies to FIFO topics only");
            case "ContentBasedDeduplication":
                return value.ToLowerInvariant() is "true" or "false"
                    ? value.ToLowerInvariant()
                    : throw SnsErrors.InvalidParameter("AttributeValue Reason: ContentBasedDeduplication must be true or false");
            case "FifoThroughputScope":
                return value is "Topic" or "MessageGroup"
                    ? value
                    : throw SnsErrors.InvalidParameter("AttributeValue Reason: FifoThroughputScope must be Topic or MessageGroup");
            case "ArchivePolicy":
                throw SnsErrors.InvalidParameter("AttributeName Reason: ArchivePolicy (message archiving and replay) is not implemented by this local endpoint");
            case "KmsMasterKeyId":
                throw SnsErrors.InvalidParameter("AttributeName Reason: KmsMasterKeyId: this local endpoint does not implement KMS encryption.");
            case "TracingConfig" when value is not ("PassThrough" or "Active"):
                throw SnsErrors.InvalidParameter("AttributeValue Reason: TracingConfig must be PassThrough or Active");
            case "SignatureVersion" when value is not ("1" or "2"):
                throw SnsErrors.InvalidParameter("AttributeValue Reason: SignatureVersion must be 1 or 2");
            case "Policy" or "DeliveryPolicy" or "DataProtectionPolicy" when !IsJsonObject(value):
                throw SnsErrors.InvalidParameter($"AttributeValue Reason: {name} must be a JSON object");
            default:
                if (!TopicAttributeNames.Contains(name))
                {
                    throw SnsErrors.InvalidParameter($"AttributeName Reason: unknown topic attribute '{name}'");
                }

                return value;
        }
    }

    private static string ValidateSubscriptionAttribute(string name, string value)
    {
        switch (name)
        {
            case "RawMessageDelivery":
                return value.ToLowerInvariant() switch
                {
                    "true" => "true",
                    "false" => "false",
                    _ => throw SnsErrors.InvalidParameter("Attributes Reason: RawMessageDelivery: Invalid value [" + value + "]. Must be true or false."),
                };
            case "FilterPolicy" or "FilterPolicyScope":
                throw SnsErrors.InvalidParameter($"Attributes Reason: {name}: subscription filter policies are not supported by this local endpoint; every subscription receives every message.");
            case "RedrivePolicy":
                if (value.Length == 0)
                {
                    return value;
                }

                if (ParseDeadLetterTargetArn(value) is not { } target || !target.StartsWith("arn:aws:sqs:", StringComparison.Ordinal))
                {
                    throw SnsErrors.InvalidParameter("Attributes Reason: RedrivePolicy: must be a JSON object whose deadLetterTargetArn is an SQS queue ARN");
                }

                return value;
            case "DeliveryPolicy":
                return IsJsonObject(value) ? value : throw SnsErrors.InvalidParameter("Attributes Reason: DeliveryPolicy must be a JSON object");
            default:
                throw SnsErrors.InvalidParameter($"AttributeName Reason: '{name}' is not a supported subscription attribute for the sqs protocol");
        }
    }

    /// <summary>The subscription's dead-letter queue; read under the topic lock.</summary>
    private static string? DeadLetterTargetArn(SnsSubscription subscription) =>
        subscription.Attributes.TryGetValue("RedrivePolicy", out var policy) ? ParseDeadLetterTargetArn(policy) : null;

    private static string? ParseDeadLetterTargetArn(string policy)
    {
        try
        {
            using var document = JsonDocument.Parse(policy);
            return document.RootElement.ValueKind == JsonValueKind.Object
                && document.RootElement.TryGetProperty("deadLetterTargetArn", out var target)
                && target.ValueKind == JsonValueKind.String
                    ? target.GetString()
                    : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static string? DefaultSubscriptionAttribute(string name) => name == "RawMessageDelivery" ? "false" : null;

    private static bool IsJsonObject(string value)
    {
        try
        {
            using var document = JsonDocument.Parse(value);
            return document.RootElement.ValueKind == JsonValueKind.Object;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    private (SnsTopic Topic, SnsSubscription Subscription) GetSubscription(string? subscriptionArn)
    {
        if (string.IsNullOrEmpty(subscriptionArn))
        {
            throw SnsErrors.MissingParameter("SubscriptionArn");
        }

        var parts = subscriptionArn.Split(':');
        if (parts.Length != 7 || parts[0] != "arn" || parts[2] != "sns")
        {
            throw SnsErrors.InvalidParameter($"SubscriptionArn Reason: '{subscriptionArn}' is not a valid subscription ARN");
        }

        if (parts[3] != context.Region || parts[4] != context.AccountId || !_topics.TryGetValue(parts[5], out var topic))
        {
            throw SnsErrors.SubscriptionNotFound();
        }

        lock (topic.Sync)
        {
            return (topic, topic.Subscriptions.FirstOrDefault(subscription => subscription.Arn == subscriptionArn)
                ?? throw SnsErrors.SubscriptionNotFound());
        }
    }

    private static (IReadOnlyList<string> Items, string? NextToken) Page(IReadOnlyList<string> sortedItems, string? nextToken)
    {
        var start = 0;
        if (!string.IsNullOrEmpty(nextToken))
        {
            string after;
            try
            {
                after = Encoding.UTF8.GetString(Convert.FromBase64String(nextToken));
            }
            catch (FormatException)
            {
                throw SnsErrors.InvalidParameter("NextToken");
            }

            start = sortedItems.Count(item => string.CompareOrdinal(item, after) <= 0);
        }

        var page = sortedItems.Skip(start).Take(PageSize).ToList();
        var token = start + page.Count < sortedItems.Count ? Convert.ToBase64String(Encoding.UTF8.GetBytes(page[^1])) : null;
        return (page, token);
    }

    private string DefaultTopicPolicy(string topicArn) => JsonSerializer.Serialize(new
    {
        Version = "2008-10-17",
        Id = "__default_policy_ID",
        Statement = new[]
        {
            new
            {
                Sid = "__default_statement_ID",
                Effect = "Allow",
                Principal = new { AWS = "*" },
                Action = new[]
                {
                    "SNS:GetTopicAttributes", "SNS:SetTopicAttributes", "SNS:AddPermission", "SNS:RemovePermission",
                    "SNS:DeleteTopic", "SNS:Subscribe", "SNS:ListSubscriptionsByTopic", "SNS:Publish",
                },
                Resource = topicArn,
                Condition = new { StringEquals = new Dictionary<string, string> { ["AWS:SourceOwner"] = context.AccountId } },
            },
        },
    });

    private const string DefaultDeliveryPolicy =
        """{"http":{"defaultHealthyRetryPolicy":{"minDelayTarget":20,"maxDelayTarget":20,"numRetries":3,"numMaxDelayRetries":0,"numNoDelayRetries":0,"numMinDelayRetries":0,"backoffFunction":"linear"},"disableSubscriptionOverrides":false}}""";

    [LoggerMessage(Level = LogLevel.Debug, Message = "Created topic {TopicName}")]
    private partial void LogTopicCreated(string topicName);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Subscribed {SubscriptionArn} to {Endpoint}")]
    private partial void LogSubscribed(string subscriptionArn, string endpoint);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Message {MessageId} not delivered to raw subscription {SubscriptionArn}: {AttributeCount} message attributes, raw delivery to SQS carries at most 10")]
    private partial void LogRawDeliveryDiscarded(string messageId, string subscriptionArn, int attributeCount);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Message {MessageId} of subscription {SubscriptionArn} sent to its dead-letter queue {DeadLetterTargetArn}: {Outcome}")]
    private partial void LogDeadLettered(string messageId, string subscriptionArn, string deadLetterTargetArn, TopicDeliveryOutcome outcome);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Message {MessageId} not delivered to subscription {SubscriptionArn} (queue {Endpoint}): {Outcome}")]
    private partial void LogDeliveryFailed(string messageId, string subscriptionArn, string endpoint, TopicDeliveryOutcome outcome);
}
