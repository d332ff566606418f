using System.Globalization;
using System.Xml;
using System.Xml.Linq;
using Messaging.LocalServiceBus.State;

namespace Messaging.LocalServiceBus.Administration;

/// <summary>Reads and writes the QueueDescription / TopicDescription / SubscriptionDescription elements.</summary>
internal static class AtomDescriptions
{
    static readonly XNamespace Sb = AdministrationServer.ServiceBus;
    static readonly XNamespace Xsi = AdministrationServer.Instance;

    public static LocalQueueOptions ReadQueue(XElement description) => new()
    {
        LockDuration = Duration(description, "LockDuration") ?? TimeSpan.FromMinutes(1),
        MaxDeliveryCount = Int(description, "MaxDeliveryCount") ?? 10,
        DefaultMessageTimeToLive = Duration(description, "DefaultMessageTimeToLive") ?? TimeSpan.MaxValue,
        DeadLetteringOnMessageExpiration = Bool(description, "DeadLetteringOnMessageExpiration") ?? false,
        ForwardDeadLetteredMessagesTo = EntityName(description, "ForwardDeadLetteredMessagesTo"),
        ForwardTo = EntityName(description, "ForwardTo"),
        RequiresSession = Bool(description, "RequiresSession") ?? false,
        RequiresDuplicateDetection = Bool(description, "RequiresDuplicateDetection") ?? false,
        EnablePartitioning = Bool(description, "EnablePartitioning") ?? false,
    };

    public static LocalTopicOptions ReadTopic(XElement description) => new()
    {
        DefaultMessageTimeToLive = Duration(description, "DefaultMessageTimeToLive") ?? TimeSpan.MaxValue,
        RequiresDuplicateDetection = Bool(description, "RequiresDuplicateDetection") ?? false,
        EnablePartitioning = Bool(description, "EnablePartitioning") ?? false,
    };

    public static LocalSubscriptionOptions ReadSubscription(XElement description)
    {
        if (description.Element(Sb + "DefaultRuleDescription") is { } rule)
        {
            var filter = rule.Element(Sb + "Filter");
            var type = filter?.Attribute(Xsi + "type")?.Value;
            var expression = filter?.Element(Sb + "SqlExpression")?.Value?.Trim();
            bool isTrue = type is null or "TrueFilter" || (type == "SqlFilter" && expression == "1=1");
            if (!isTrue)
            {
                throw ServiceBusErrorException.NotSupported(
                    $"Rule filters of type {type} are not supported by the local Service Bus endpoint; only the default TrueFilter is.");
            }
        }

        return new LocalSubscriptionOptions
        {
            LockDuration = Duration(description, "LockDuration") ?? TimeSpan.FromMinutes(1),
            MaxDeliveryCount = Int(description, "MaxDeliveryCount") ?? 10,
            DefaultMessageTimeToLive = Duration(description, "DefaultMessageTimeToLive") ?? TimeSpan.MaxValue,
            DeadLetteringOnMessageExpiration = Bool(description, "DeadLetteringOnMessageExpiration") ?? false,
            ForwardDeadLetteredMessagesTo = EntityName(description, "ForwardDeadLetteredMessagesTo"),
            ForwardTo = EntityName(description, "ForwardTo"),
            RequiresSession = Bool(description, "RequiresSession") ?? false,
        };
    }

    public static XElement WriteQueue(LocalQueueOptions options, DateTime created, DateTime updated, (long Active, long DeadLetter, long Scheduled) counts, XNamespace countNamespace, Uri baseAddress) =>
        new(Sb + "QueueDescription",
            new XAttribute(XNamespace.Xmlns + "i", Xsi.NamespaceName),
            Element("LockDuration", XmlConvert.ToString(options.LockDuration)),
            Element("MaxSizeInMegabytes", "1024"),
            Element("RequiresDuplicateDetection", options.RequiresDuplicateDetection),
            Element("RequiresSession", options.RequiresSession),
            Element("DefaultMessageTimeToLive", XmlConvert.ToString(options.DefaultMessageTimeToLive)),
            Element("DeadLetteringOnMessageExpiration", options.DeadLetteringOnMessageExpiration),
            Element("DuplicateDetectionHistoryTimeWindow", "PT10M"),
            Element("MaxDeliveryCount", options.MaxDeliveryCount),
            Element("EnableBatchedOperations", true),
            Element("SizeInBytes", 0),
            Element("MessageCount", counts.Active + counts.DeadLetter + counts.Scheduled),
            Element("IsAnonymousAccessible", false),
            Element("Status", "Active"),
            Timestamps(created, updated),
            Element("SupportOrdering", true),
            Counts(counts, countNamespace),
            Element("AutoDeleteOnIdle", XmlConvert.ToString(TimeSpan.MaxValue)),
            Element("EnablePartitioning", options.EnablePartitioning),
            Element("EntityAvailabilityStatus", "Available"),
            options.ForwardDeadLetteredMessagesTo is { } forward ? Element("ForwardDeadLetteredMessagesTo", new Uri(baseAddress, forward).AbsoluteUri) : null,
            Element("EnableExpress", false));

    public static XElement WriteTopic(LocalTopicOptions options, DateTime created, DateTime updated, int subscriptionCount) =>
        new(Sb + "TopicDescription",
            new XAttribute(XNamespace.Xmlns + "i", Xsi.NamespaceName),
            Element("DefaultMessageTimeToLive", XmlConvert.ToString(options.DefaultMessageTimeToLive)),
            Element("MaxSizeInMegabytes", "1024"),
            Element("RequiresDuplicateDetection", options.RequiresDuplicateDetection),
            Element("DuplicateDetectionHistoryTimeWindow", "PT10M"),
            Element("EnableBatchedOperations", true),
            Element("SizeInBytes", 0),
            Element("FilteringMessagesBeforePublishing", false),
            Element("IsAnonymousAccessible", false),
            Element("Status", "Active"),
            Timestamps(created, updated),
            Element("SupportOrdering", true),
            Element("SubscriptionCount", subscriptionCount),
            Element("AutoDeleteOnIdle", XmlConvert.ToString(TimeSpan.MaxValue)),
            Element("EnablePartitioning", options.EnablePartitioning),
            Element("EntityAvailabilityStatus", "Available"),
            Element("EnableSubscriptionPartitioning", false),
            Element("EnableExpress", false));

    public static XElement WriteSubscription(LocalSubscriptionOptions options, DateTime created, DateTime updated, (long Active, long DeadLetter, long Scheduled) counts, XNamespace countNamespace, Uri baseAddress) =>
        new(Sb + "SubscriptionDescription",
            new XAttribute(XNamespace.Xmlns + "i", Xsi.NamespaceName),
            Element("LockDuration", XmlConvert.ToString(options.LockDuration)),
            Element("RequiresSession", options.RequiresSession),
            Element("DefaultMessageTimeToLive", XmlConvert.ToString(options.DefaultMessageTimeToLive)),
            Element("DeadLetteringOnMessageExpiration", options.DeadLetteringOnMessageExpiration),
            Element("DeadLetteringOnFilterEvaluationExceptions", true),
            Element("MessageCount", counts.Active + counts.DeadLetter + counts.Scheduled),
            Element("MaxDeliveryCount", options.MaxDeliveryCount),
            Element("EnableBatchedOperations", true),
            Element("Status", "Active"),
            Timestamps(created, updated),
            Counts(counts, countNamespace),
            Element("AutoDeleteOnIdle", XmlConvert.ToString(TimeSpan.MaxValue)),
            options.ForwardDeadLetteredMessagesTo is { } forward ? Element("ForwardDeadLetteredMessagesTo", new Uri(baseAddress, forward).AbsoluteUri) : null,
            Element("EntityAvailabilityStatus", "Available"));

    public static XElement WriteDefaultRule() =>
        new(Sb + "RuleDescription",
            new XAttribute(XNamespace.Xmlns + "i", Xsi.NamespaceName),
            new XElement(Sb + "Filter", new XAttribute(Xsi + "type", "TrueFilter"),
                Element("SqlExpression", "1=1"),
                Element("CompatibilityLevel", 20)),
            new XElement(Sb + "Action", new XAttribute(Xsi + "type", "EmptyRuleAction")),
            Element("CreatedAt", XmlConvert.ToString(DateTime.UtcNow, XmlDateTimeSerializationMode.Utc)),
            Element("Name", "$Default"));

    static XElement[] Timestamps(DateTime created, DateTime updated) =>
    [
        Element("CreatedAt", XmlConvert.ToString(created, XmlDateTimeSerializationMode.Utc)),
        Element("UpdatedAt", XmlConvert.ToString(updated, XmlDateTimeSerializationMode.Utc)),
        Element("AccessedAt", XmlConvert.ToString(updated, XmlDateTimeSerializationMode.Utc)),
    ];

    static XElement Counts((long Active, long DeadLetter, long Scheduled) counts, XNamespace ns) =>
        new(Sb + "CountDetails",
            new XAttribute(XNamespace.Xmlns + "d2p1", ns.NamespaceName),
            new XElement(ns + "ActiveMessageCount", counts.Active),
            new XElement(ns + "DeadLetterMessageCount", counts.DeadLetter),
            new XElement(ns + "ScheduledMessageCount", counts.Scheduled),
            new XElement(ns + "TransferMessageCount", 0),
            new XElement(ns + "TransferDeadLetterMessageCount", 0));

    static XElement Element(string name, object value) => new(Sb + name, value is bool flag ? XmlConvert.ToString(flag) : Convert.ToString(value, CultureInfo.InvariantCulture));

    static string? Text(XElement description, string name) => description.Element(Sb + name)?.Value is { Length: > 0 } text ? text.Trim() : null;

    static TimeSpan? Duration(XElement description, string name) => Text(description, name) is { } text ? XmlConvert.ToTimeSpan(text) : null;

    static int? Int(XElement description, string name) => Text(description, name) is { } text ? int.Parse(text, CultureInfo.InvariantCulture) : null;

    static bool? Bool(XElement description, string name) => Text(description, name) is { } text ? XmlConvert.ToBoolean(text) : null;

    // The SDK sends forwarding targets as absolute URIs of the namespace (http://host:port/name); keep the entity name.
    static string? EntityName(XElement description, string name)
    {
        var text = Text(description, name);
        if (text is null)
        {
            return null;
        }

        return Uri.TryCreate(text, UriKind.Absolute, out var uri) ? Uri.UnescapeDataString(uri.AbsolutePath).Trim('/') : text;
    }
}
