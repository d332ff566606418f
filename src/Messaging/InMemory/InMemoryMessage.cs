namespace Messaging.InMemory;

/// <summary>A message as the in-memory broker stores it: string properties plus a body, like a real broker's wire format.</summary>
public sealed class InMemoryMessage
{
    /// <summary>Creates a stored message.</summary>
    /// <param name="properties">The CloudEvent's attributes as strings, keyed by attribute name.</param>
    /// <param name="body">The event's data as bytes.</param>
    /// <param name="contentType">The data's content type (<c>datacontenttype</c>), if any.</param>
    public InMemoryMessage(IReadOnlyDictionary<string, string> properties, ReadOnlyMemory<byte> body, string? contentType)
    {
        Properties = properties;
        Body = body;
        ContentType = contentType;
        OrderingKey = properties.TryGetValue(PartitionKeyProperty, out var key) && key.Length > 0 ? key : null;
    }

    /// <summary>The property an ordered queue groups messages by: the CloudEvents <c>partitionkey</c> extension.</summary>
    internal const string PartitionKeyProperty = "partitionkey";

    /// <summary>The message's ordering key in an ordered queue, like an SQS FIFO message group id; null without one.</summary>
    internal string? OrderingKey { get; }

    /// <summary>Unique per stored copy; the dead-letter id.</summary>
    public string MessageId { get; } = Guid.NewGuid().ToString("N");

    /// <summary>The CloudEvent's attributes as strings, plus dead-letter metadata on a dead letter.</summary>
    public IReadOnlyDictionary<string, string> Properties { get; }

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
}
