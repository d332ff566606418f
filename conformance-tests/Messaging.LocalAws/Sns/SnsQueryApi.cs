using System.Globalization;
using System.Xml.Linq;
using Messaging.LocalAws.Protocol;

namespace Messaging.LocalAws.Sns;

/// <summary>
/// The SNS operations in the AWS query protocol: form parameters in (<c>Action=...&amp;Version=2010-03-31</c>,
/// lists as <c>member.N</c>, maps as <c>entry.N.key/value</c>), XML out in the SNS namespace.
/// </summary>
internal sealed class SnsQueryApi(SnsBroker broker)
{
    public const string ApiVersion = "2010-03-31";
    public static readonly XNamespace Namespace = "http://sns.amazonaws.com/doc/2010-03-31/";

    private const int MaxBatchEntries = 10;

    public static readonly IReadOnlySet<string> Actions = new HashSet<string>(StringComparer.Ordinal)
    {
        "CreateTopic", "GetTopicAttributes", "SetTopicAttributes", "DeleteTopic", "ListTopics", "Subscribe", "Unsubscribe",
        "SetSubscriptionAttributes", "GetSubscriptionAttributes", "ListSubscriptionsByTopic", "ListSubscriptions",
        "Publish", "PublishBatch",
    };

    public XElement Invoke(string action, IReadOnlyDictionary<string, string> parameters, string requestId)
    {
        var result = action switch
        {
            "CreateTopic" => Result(action, new XElement(Namespace + "TopicArn", broker.CreateTopic(
                Get(parameters, "Name"), Map(parameters, "Attributes", "key", "value"), Tags(parameters)))),
            "GetTopicAttributes" => Result(action, AttributesElement(broker.GetTopicAttributes(broker.GetTopic(Get(parameters, "TopicArn"))))),
            "SetTopicAttributes" => NoResult(() => broker.SetTopicAttribute(
                broker.GetTopic(Get(parameters, "TopicArn")), Get(parameters, "AttributeName"), Get(parameters, "AttributeValue"))),
            "DeleteTopic" => NoResult(() => broker.DeleteTopic(Get(parameters, "TopicArn"))),
            "ListTopics" => ListTopics(action, parameters),
            "Subscribe" => Result(action, new XElement(Namespace + "SubscriptionArn", broker.Subscribe(
                Get(parameters, "TopicArn"), Get(parameters, "Protocol"), Get(parameters, "Endpoint"),
                Map(parameters, "Attributes", "key", "value")))),
            "Unsubscribe" => NoResult(() => broker.Unsubscribe(Get(parameters, "SubscriptionArn"))),
            "GetSubscriptionAttributes" => Result(action, AttributesElement(broker.GetSubscriptionAttributes(Get(parameters, "SubscriptionArn")))),
            "SetSubscriptionAttributes" => NoResult(() => broker.SetSubscriptionAttribute(
                Get(parameters, "SubscriptionArn"), Get(parameters, "AttributeName"), Get(parameters, "AttributeValue"))),
            "ListSubscriptionsByTopic" => ListSubscriptions(action, broker.GetTopic(Get(parameters, "TopicArn")), parameters),
            "ListSubscriptions" => ListSubscriptions(action, null, parameters),
            "Publish" => Publish(action, parameters),
            "PublishBatch" => PublishBatch(action, parameters),
            _ => throw SnsErrors.InvalidAction(action),
        };

        var response = new XElement(Namespace + $"{action}Response");
        if (result is not null)
        {
            response.Add(result);
        }

        response.Add(new XElement(Namespace + "ResponseMetadata", new XElement(Namespace + "RequestId", requestId)));
        return response;
    }

    public static XElement Error(AwsServiceException error, string requestId) =>
        new(Namespace + "ErrorResponse",
            new XElement(Namespace + "Error",
                new XElement(Namespace + "Type", error.SenderFault ? "Sender" : "Receiver"),
                new XElement(Namespace + "Code", error.Code),
                new XElement(Namespace + "Message", error.Message)),
            new XElement(Namespace + "RequestId", requestId));

    private XElement ListTopics(string action, IReadOnlyDictionary<string, string> parameters)
    {
        var (arns, nextToken) = broker.ListTopics(Get(parameters, "NextToken"));
        var result = Result(action, new XElement(Namespace + "Topics",
            arns.Select(arn => new XElement(Namespace + "member", new XElement(Namespace + "TopicArn", arn)))));
        if (nextToken is not null)
        {
            result.Add(new XElement(Namespace + "NextToken", nextToken));
        }

        return result;
    }

    private XElement ListSubscriptions(string action, SnsTopic? topic, IReadOnlyDictionary<string, string> parameters)
    {
        var (subscriptions, nextToken) = broker.ListSubscriptions(topic, Get(parameters, "NextToken"));
        var result = Result(action, new XElement(Namespace + "Subscriptions",
            subscriptions.Select(subscription => new XElement(Namespace + "member",
                new XElement(Namespace + "TopicArn", subscription.TopicArn),
                new XElement(Namespace + "Protocol", subscription.Protocol),
                new XElement(Namespace + "SubscriptionArn", subscription.Arn),
                new XElement(Namespace + "Owner", broker.AccountId),
                new XElement(Namespace + "Endpoint", subscription.Endpoint)))));
        if (nextToken is not null)
        {
            result.Add(new XElement(Namespace + "NextToken", nextToken));
        }

        return result;
    }

    private XElement Publish(string action, IReadOnlyDictionary<string, string> parameters)
    {
        if (Get(parameters, "PhoneNumber") is not null)
        {
            throw SnsErrors.InvalidParameter("PhoneNumber Reason: SMS delivery is not supported by this local endpoint");
        }

        var topicArn = Get(parameters, "TopicArn") ?? Get(parameters, "TargetArn");
        if (topicArn is null)
        {
            throw SnsErrors.InvalidParameter("TopicArn or TargetArn Reason: no value for required parameter");
        }

        var input = PublishInput(parameters);
        SnsBroker.ValidatePublish(input);
        var topic = broker.GetTopic(topicArn, Get(parameters, "TopicArn") is null ? "TargetArn" : "TopicArn");
        var (messageId, sequenceNumber) = broker.PublishWithSequence(topic, input);
        return sequenceNumber is null
            ? Result(action, new XElement(Namespace + "MessageId", messageId))
            : Result(action, new XElement(Namespace + "MessageId", messageId), new XElement(Namespace + "SequenceNumber", sequenceNumber));
    }

    private XElement PublishBatch(string action, IReadOnlyDictionary<string, string> parameters)
    {
        var topic = broker.GetTopic(Get(parameters, "TopicArn"));
        var entries = Members(parameters, "PublishBatchRequestEntries");
        if (entries.Count == 0)
        {
            throw SnsErrors.EmptyBatchRequest();
        }

        if (entries.Count > MaxBatchEntries)
        {
            throw SnsErrors.TooManyEntriesInBatchRequest(entries.Count);
        }

        var ids = new HashSet<string>(StringComparer.Ordinal);
        foreach (var entry in entries)
        {
            var id = Get(entry, "Id") ?? string.Empty;
            if (id.Length is 0 or > 80 || !id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
            {
                throw SnsErrors.InvalidBatchEntryId(id);
            }

            if (!ids.Add(id))
            {
                throw SnsErrors.BatchEntryIdsNotDistinct(id);
            }
        }

        var inputs = entries.Select(entry => PublishInput(entry)).ToList();
        var total = inputs.Sum(input => input.Message is null ? 0 : Sqs.SqsBroker.MessageSize(input.Message, input.MessageAttributes));
        if (total > SnsBroker.MaxMessageSize)
        {
            throw SnsErrors.BatchRequestTooLong(total);
        }

        var successful = new XElement(Namespace + "Successful");
        var failed = new XElement(Namespace + "Failed");
        for (var index = 0; index < entries.Count; index++)
        {
            var id = Get(entries[index], "Id")!;
            try
            {
                var (messageId, sequenceNumber) = broker.PublishWithSequence(topic, inputs[index]);
                var member = new XElement(Namespace + "member",
                    new XElement(Namespace + "Id", id),
                    new XElement(Namespace + "MessageId", messageId));
                if (sequenceNumber is not null)
                {
                    member.Add(new XElement(Namespace + "SequenceNumber", sequenceNumber));
                }

                successful.Add(member);
            }
            catch (AwsServiceException error)
            {
                failed.Add(new XElement(Namespace + "member",
                    new XElement(Namespace + "Id", id),
                    new XElement(Namespace + "Code", error.Code),
                    new XElement(Namespace + "Message", error.Message),
                    new XElement(Namespace + "SenderFault", error.SenderFault ? "true" : "false")));
            }
        }

        return Result(action, successful, failed);
    }

    private static PublishInput PublishInput(IReadOnlyDictionary<string, string> parameters) => new(
        Get(parameters, "Message"),
        Get(parameters, "Subject"),
        Get(parameters, "MessageStructure"),
        MessageAttributes(parameters),
        Get(parameters, "MessageGroupId"),
        Get(parameters, "MessageDeduplicationId"));

    /// <summary>MessageAttributes.entry.N.Name, .Value.DataType, .Value.StringValue, .Value.BinaryValue (base64).</summary>
    private static Dictionary<string, MessageAttribute> MessageAttributes(IReadOnlyDictionary<string, string> parameters)
    {
        var attributes = new Dictionary<string, MessageAttribute>(StringComparer.Ordinal);
        foreach (var entry in Members(parameters, "MessageAttributes", "entry"))
        {
            var name = Get(entry, "Name") ?? throw SnsErrors.InvalidParameterValue("A message attribute entry has no Name.");
            byte[]? binary = null;
            if (Get(entry, "Value.BinaryValue") is { } base64)
            {
                try
                {
                    binary = Convert.FromBase64String(base64);
                }
                catch (FormatException)
                {
                    throw SnsErrors.InvalidParameterValue($"The message attribute '{name}' has a BinaryValue that is not valid base64.");
                }
            }

            if (!attributes.TryAdd(name, new MessageAttribute(Get(entry, "Value.DataType") ?? string.Empty, Get(entry, "Value.StringValue"), binary)))
            {
                throw SnsErrors.InvalidParameterValue($"Message attribute name '{name}' is given more than once.");
            }
        }

        return attributes;
    }

    private static Dictionary<string, string> Map(IReadOnlyDictionary<string, string> parameters, string name, string keyName, string valueName)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var entry in Members(parameters, name, "entry"))
        {
            var key = Get(entry, keyName) ?? throw SnsErrors.InvalidParameter($"{name} Reason: an entry has no {keyName}");
            map[key] = Get(entry, valueName) ?? string.Empty;
        }

        return map;
    }

    private static Dictionary<string, string> Tags(IReadOnlyDictionary<string, string> parameters)
    {
        var tags = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var member in Members(parameters, "Tags"))
        {
            var key = Get(member, "Key") ?? throw SnsErrors.InvalidParameter("Tags Reason: a tag has no Key");
            tags[key] = Get(member, "Value") ?? string.Empty;
        }

        return tags;
    }

    /// <summary>The sub-parameters of <c>{name}.{item}.N.*</c>, in index order, with the prefix removed.</summary>
    private static List<Dictionary<string, string>> Members(IReadOnlyDictionary<string, string> parameters, string name, string item = "member")
    {
        var prefix = $"{name}.{item}.";
        var byIndex = new SortedDictionary<int, Dictionary<string, string>>();
        foreach (var (key, value) in parameters)
        {
            if (!key.StartsWith(prefix, StringComparison.Ordinal))
            {
                continue;
            }

            var rest = key[prefix.Length..];
            var dot = rest.IndexOf('.', StringComparison.Ordinal);
            if (dot <= 0 || !int.TryParse(rest[..dot], NumberStyles.None, CultureInfo.InvariantCulture, out var index) || index < 1)
            {
                throw SnsErrors.InvalidParameter($"{key} Reason: list and map entries are numbered from 1");
            }

            if (!byIndex.TryGetValue(index, out var member))
            {
                byIndex[index] = member = new Dictionary<string, string>(StringComparer.Ordinal);
            }

            member[rest[(dot + 1)..]] = value;
        }

        return byIndex.Values.ToList();
    }

    private static string? Get(IReadOnlyDictionary<string, string> parameters, string name) =>
        parameters.TryGetValue(name, out var value) ? value : null;

    private static XElement Result(string action, params object[] content) => new(Namespace + $"{action}Result", content);

    private static XElement? NoResult(Action operation)
    {
        operation();
        return null;
    }

    private static XElement AttributesElement(IReadOnlyDictionary<string, string> attributes) =>
        new(Namespace + "Attributes", attributes.Select(pair => new XElement(Namespace + "entry",
            new XElement(Namespace + "key", pair.Key),
            new XElement(Namespace + "value", pair.Value))));
}
