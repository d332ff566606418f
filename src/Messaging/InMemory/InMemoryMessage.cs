using CloudNative.CloudEvents;

namespace Messaging.InMemory;

/// <summary>
/// A message as the in-memory broker stores it: string properties plus a body, like a real broker's wire format. An event
/// published through the transport is stored as a snapshot of its attributes instead (values are immutable, binary ones
/// copied) and a copy of its data; its string properties are made only when something asks for them (a dead letter).
/// </summary>
public sealed class InMemoryMessage
{
    private IReadOnlyDictionary<string, string>? _properties;

    /// <summary>Creates a stored message.</summary>
    /// <param name="properties">The CloudEvent's attributes as strings, keyed by attribute name.</param>
    /// <param name="body">The event's data as bytes.</param>
    /// <param name="contentType">The data's content type (<c>datacontenttype</c>), if any.</param>
    public InMemoryMessage(IReadOnlyDictionary<string, string> properties, ReadOnlyMemory<byte> body, string? contentType)
    {
        _properties = properties;
        Body = body;
        ContentType = contentType;
        OrderingKey = properties.TryGetValue(PartitionKeyProperty, out var key) && key.Length > 0 ? key : null;
    }

    /// <summary>A published event: <paramref name="attributes"/> is a snapshot nobody else holds, <paramref name="body"/> a copy of its data.</summary>
    internal InMemoryMessage(CloudEventsSpecVersion specVersion, KeyValuePair<CloudEventAttribute, object>[] attributes, ReadOnlyMemory<byte> body, string? contentType, string? orderingKey)
    {
        SpecVersion = specVersion;
        Attributes = attributes;
        Body = body;
        ContentType = contentType;
        OrderingKey = orderingKey;
    }

    /// <summary>The spec version of a stored snapshot.</summary>
    internal CloudEventsSpecVersion? SpecVersion { get; }

    /// <summary>The attributes of a published event, <c>datacontenttype</c> excluded; null for a raw message.</summary>
    internal KeyValuePair<CloudEventAttribute, object>[]? Attributes { get; }

    /// <summary>The property an ordered queue groups messages by: the CloudEvents <c>partitionkey</c> extension.</summary>
    internal const string PartitionKeyProperty = "partitionkey";

    /// <summary>The message's ordering key in an ordered queue, like an SQS FIFO message group id; null without one.</summary>
    internal string? OrderingKey { get; }

    private string? _messageId;

    /// <summary>Unique per stored copy; the dead-letter id.</summary>
    /// <remarks>
    /// Made when first asked for (a dead letter, a log line): a random id costs a read of the system's random source, which
    /// was a tenth of the transport's CPU per event when every stored copy made one.
    /// </remarks>
    public string MessageId => LazyInitializer.EnsureInitialized(ref _messageId, static () => Guid.NewGuid().ToString("N"));

    /// <summary>The CloudEvent's attributes as strings, plus dead-letter metadata on a dead letter.</summary>
    public IReadOnlyDictionary<string, string> Properties => _properties ??= FormatAttributes();

    private Dictionary<string, string> FormatAttributes()
    {
        var properties = new Dictionary<string, string>(Attributes!.Length + 1, StringComparer.Ordinal)
        {
            ["specversion"] = SpecVersion!.VersionId,
        };
        foreach (var (attribute, value) in Attributes)
        {
            properties[attribute.Name] = attribute.Format(value);
        }
        return properties;
    }

    /// <summary>The event's data as bytes.</summary>
    public ReadOnlyMemory<byte> Body { get; }

    /// <summary>The data's content type (<c>datacontenttype</c>), if any.</summary>
    public string? ContentType { get; }

    /// <summary>Deliveries so far; kept by the broker, so it survives consumers that die.</summary>
    internal int DeliveryCount;

    /// <summary>Times it came back unsettled; kept by the broker, like <see cref="DeliveryCount"/>.</summary>
    internal int Returns;

    /// <summary>Set while the message takes one of its queue's places for published messages.</summary>
    internal bool HoldsRoom;

    internal InMemoryMessage CopyWith(IReadOnlyDictionary<string, string> properties) => new(properties, Body, ContentType);

    /// <summary>Another stored copy of the same content (for another subscription): its own id and delivery counts.</summary>
    internal InMemoryMessage Copy() =>
        Attributes is not null ? new(SpecVersion!, Attributes, Body, ContentType, OrderingKey) : new(Properties, Body, ContentType);
}
