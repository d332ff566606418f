namespace Messaging.LocalAws.Sns;

/// <summary>A standard topic. Its attribute and subscription collections are guarded by <see cref="Sync"/>.</summary>
internal sealed class SnsTopic(string name, string arn, IReadOnlyDictionary<string, string> attributes, IReadOnlyDictionary<string, string> tags)
{
    public Lock Sync { get; } = new();
    public string Name { get; } = name;
    public string Arn { get; } = arn;
    public Dictionary<string, string> Attributes { get; } = new(attributes, StringComparer.Ordinal);
    public Dictionary<string, string> Tags { get; } = new(tags, StringComparer.Ordinal);
    public List<SnsSubscription> Subscriptions { get; } = [];
}

/// <summary>A confirmed subscription of a topic (SQS subscriptions in the same account need no confirmation).</summary>
internal sealed class SnsSubscription(string arn, string topicArn, string protocol, string endpoint, IReadOnlyDictionary<string, string> attributes)
{
    public string Arn { get; } = arn;
    public string TopicArn { get; } = topicArn;
    public string Protocol { get; } = protocol;
    public string Endpoint { get; } = endpoint;

    /// <summary>Guarded by the topic's lock.</summary>
    public Dictionary<string, string> Attributes { get; } = new(attributes, StringComparer.Ordinal);

    public bool RawMessageDelivery => Attributes.TryGetValue("RawMessageDelivery", out var raw) && string.Equals(raw, "true", StringComparison.OrdinalIgnoreCase);
}
