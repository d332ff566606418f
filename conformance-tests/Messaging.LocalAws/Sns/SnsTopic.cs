namespace Messaging.LocalAws.Sns;

/// <summary>A standard or FIFO topic. Its attribute, subscription and deduplication collections are guarded by <see cref="Sync"/>.</summary>
internal sealed class SnsTopic(string name, string arn, IReadOnlyDictionary<string, string> attributes, IReadOnlyDictionary<string, string> tags)
{
    public Lock Sync { get; } = new();
    public string Name { get; } = name;
    public string Arn { get; } = arn;
    public Dictionary<string, string> Attributes { get; } = new(attributes, StringComparer.Ordinal);
    public Dictionary<string, string> Tags { get; } = new(tags, StringComparer.Ordinal);
    public List<SnsSubscription> Subscriptions { get; } = [];

    /// <summary>A FIFO topic (name ending <c>.fifo</c>, created with <c>FifoTopic=true</c>); never changes.</summary>
    public bool IsFifo { get; } = name.EndsWith(".fifo", StringComparison.Ordinal);

    /// <summary>FIFO topics: deduplication ids accepted within the last 5 minutes, with the first message's id and sequence number.</summary>
    public Dictionary<string, (DateTimeOffset FirstPublishedAt, string MessageId, string SequenceNumber)> Deduplication { get; } = new(StringComparer.Ordinal);

    /// <summary>FIFO topics: the last sequence number handed out.</summary>
    public long Sequence { get; set; }
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
