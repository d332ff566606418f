using System.Text;
using CloudNative.CloudEvents;
using Google.Protobuf;
using Messaging.Envelope;
using Messaging.PubSub.Grpc;

namespace Messaging.PubSub;

/// <summary>
/// CloudEvents over Pub/Sub, following Google's binding: binary mode puts each attribute in a <c>ce-{name}</c>
/// message attribute, <c>datacontenttype</c> in <c>content-type</c>, and the data in the message data; structured
/// mode puts the JSON document in the data with <c>content-type: application/cloudevents+json</c>.
/// The <c>partitionkey</c> extension becomes the ordering key.
/// </summary>
internal sealed class PubSubCodec(ContentMode mode, long maxEventSizeBytes, IReadOnlyList<CloudEventAttribute> extensions)
{
    public const string AttributePrefix = "ce-";
    public const string ContentTypeAttribute = "content-type";
    public const string PartitionKeyAttribute = "partitionkey";

    // Pub/Sub's per-message attribute limits; an event that does not fit them in binary mode is sent structured.
    private const int MaxAttributes = 100;
    private const int MaxAttributeKeyBytes = 256;
    private const int MaxAttributeValueBytes = 1024;

    /// <summary>Encodes an event whose data is bytes (or absent); throws <see cref="EventTooLargeException"/>.</summary>
    public PubsubMessage Encode(CloudEvent cloudEvent) => Encode(cloudEvent, out _);

    /// <summary>Encodes an event as <see cref="Encode(CloudEvent)"/>, and gives its size as <see cref="SizeOf"/> counts it.</summary>
    public PubsubMessage Encode(CloudEvent cloudEvent, out long size)
    {
        ArgumentNullException.ThrowIfNull(cloudEvent);
        CloudEventAttributeMap.EnsureValid(cloudEvent);
        PubsubMessage? message = null;
        long attributeBytes = 0;
        if (mode == ContentMode.Binary)
        {
            message = TryEncodeBinary(cloudEvent, out attributeBytes);
        }
        if (message is null)
        {
            message = EncodeStructured(cloudEvent);
            attributeBytes = AttributeBytes(message);
        }
        var orderingKey = OrderingKey(cloudEvent);
        if (orderingKey is not null)
        {
            message.OrderingKey = orderingKey;
        }
        size = attributeBytes + message.Data.Length + Encoding.UTF8.GetByteCount(message.OrderingKey);
        if (size > maxEventSizeBytes)
        {
            throw new EventTooLargeException(cloudEvent.Id ?? "?", size, maxEventSizeBytes, PubSubTransport.TransportName);
        }
        return message;
    }

    /// <summary>
    /// The binary-mode message, or null when its attributes exceed Pub/Sub's limits; <paramref name="attributeBytes"/> is
    /// what its attributes count against the size limit. Names and sizes are counted as each attribute is added: enumerating
    /// a message's attribute map allocates an enumerator each time, and this runs for every event published.
    /// </summary>
    private static PubsubMessage? TryEncodeBinary(CloudEvent cloudEvent, out long attributeBytes)
    {
        attributeBytes = 0;
        var message = new PubsubMessage();
        var attributes = message.Attributes;
        foreach (var (name, value) in CloudEventAttributeMap.ToAttributes(cloudEvent))
        {
            var key = PrefixedNames.Get(name);
            if (!Fits(key, value, ref attributeBytes))
            {
                return null;
            }
            attributes[key] = value;
        }
        if (cloudEvent.DataContentType is { } contentType)
        {
            if (!Fits(ContentTypeAttribute, contentType, ref attributeBytes))
            {
                return null;
            }
            attributes[ContentTypeAttribute] = contentType;
        }
        if (attributes.Count > MaxAttributes)
        {
            return null;
        }
        var data = CloudEventData.GetBytes(cloudEvent);
        if (data is { Length: > 0 })
        {
            message.Data = ByteString.CopyFrom(data);
        }
        return message;
    }

    /// <summary>Whether one attribute is within Pub/Sub's limits; adds what it counts against the size limit.</summary>
    private static bool Fits(string key, string value, ref long attributeBytes)
    {
        var keyBytes = Encoding.UTF8.GetByteCount(key);
        var valueBytes = Encoding.UTF8.GetByteCount(value);
        attributeBytes += keyBytes + valueBytes;
        return keyBytes <= MaxAttributeKeyBytes && valueBytes <= MaxAttributeValueBytes;
    }

    private static readonly PrefixedAttributeNames PrefixedNames = new(AttributePrefix);

    private static PubsubMessage EncodeStructured(CloudEvent cloudEvent)
    {
        var message = new PubsubMessage { Data = ByteString.CopyFrom(StructuredJson.Encode(cloudEvent).Span) };
        message.Attributes[ContentTypeAttribute] = StructuredJson.MediaType + "; charset=utf-8";
        return message;
    }

    /// <summary>The ordering key of an event: its <c>partitionkey</c> extension, if set.</summary>
    public static string? OrderingKey(CloudEvent cloudEvent)
    {
        var attribute = cloudEvent.GetAttribute(PartitionKeyAttribute);
        if (attribute is null || cloudEvent[attribute] is not { } value)
        {
            return null;
        }
        var text = attribute.Format(value);
        return text.Length == 0 ? null : text;
    }

    /// <summary>Bytes a message counts against Pub/Sub's size limit.</summary>
    public static long SizeOf(PubsubMessage message) =>
        message.Data.Length + Encoding.UTF8.GetByteCount(message.OrderingKey) + AttributeBytes(message);

    private static long AttributeBytes(PubsubMessage message)
    {
        long size = 0;
        foreach (var (key, value) in message.Attributes)
        {
            size += Encoding.UTF8.GetByteCount(key) + Encoding.UTF8.GetByteCount(value);
        }
        return size;
    }

    /// <summary>Decodes a received message; throws <see cref="InvalidCloudEventException"/> with a precise reason.</summary>
    public CloudEvent Decode(PubsubMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        var contentType = ContentType(message);
        var data = message.Data.Memory;
        if (StructuredJson.IsStructured(contentType))
        {
            return StructuredJson.Decode(data, contentType, extensions);
        }
        var attributes = new List<KeyValuePair<string, string>>(message.Attributes.Count);
        foreach (var (key, value) in message.Attributes)
        {
            if (key.Length > AttributePrefix.Length && key.StartsWith(AttributePrefix, StringComparison.OrdinalIgnoreCase))
            {
                // The attribute's name without the prefix, lower-cased, from a bounded cache: no new string per attribute.
                attributes.Add(new(CloudEventAttributeMap.AttributeName(key)!, value));
            }
        }
        try
        {
            return CloudEventAttributeMap.FromAttributes(attributes, contentType, data, extensions);
        }
        catch (InvalidCloudEventException) when (attributes.Count == 0 && contentType is null && LooksLikeJsonObject(data.Span))
        {
            // A producer that wrote a structured-mode document without saying so: accept it if it is one.
            return StructuredJson.Decode(data, StructuredJson.MediaType, extensions);
        }
    }

    /// <summary>The <c>content-type</c> attribute, accepting any capitalisation (<c>Content-Type</c> is common).</summary>
    public static string? ContentType(PubsubMessage message)
    {
        if (message.Attributes.TryGetValue(ContentTypeAttribute, out var contentType))
        {
            return contentType;
        }
        foreach (var (key, value) in message.Attributes)
        {
            if (string.Equals(key, ContentTypeAttribute, StringComparison.OrdinalIgnoreCase))
            {
                return value;
            }
        }
        return null;
    }

    private static bool LooksLikeJsonObject(ReadOnlySpan<byte> data)
    {
        foreach (var b in data)
        {
            if (b is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n')
            {
                continue;
            }
            return b == (byte)'{';
        }
        return false;
    }
}
