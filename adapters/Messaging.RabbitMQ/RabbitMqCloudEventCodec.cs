using System.Text;
using CloudNative.CloudEvents;
using Messaging.Envelope;
using RabbitMQ.Client;

namespace Messaging.RabbitMQ;

/// <summary>
/// CloudEvents over AMQP 0-9-1. There is no official binding for 0-9-1, so we follow the AMQP 1.0 binding as
/// closely as the protocol allows: attributes as string headers named <c>cloudEvents_{attribute}</c>,
/// <c>datacontenttype</c> as the content-type property, data as the body; <c>id</c> is also copied to the
/// message-id property and <c>type</c> is the routing key. On receive, the prefixes <c>cloudEvents_</c>,
/// <c>cloudEvents:</c>, <c>ce-</c> and <c>ce_</c> are all accepted, and a content type of
/// <c>application/cloudevents+json</c> means structured mode.
/// </summary>
internal sealed class RabbitMqCloudEventCodec(ContentMode mode, IReadOnlyList<CloudEventAttribute> extensionAttributes, long maxEventSizeBytes)
{
    // Header names repeat on every message; computing them once keeps a string per header off the hot path. The
    // names are the application's own attributes, but the cache still stops growing at a bound.
    private static readonly PrefixedAttributeNames HeaderNames = new(RabbitMqNames.AttributePrefix);
    private static readonly Dictionary<string, object?> EmptyHeaders = [];

    public (BasicProperties Properties, ReadOnlyMemory<byte> Body, string RoutingKey) Encode(CloudEvent cloudEvent)
    {
        ArgumentNullException.ThrowIfNull(cloudEvent);
        var properties = new BasicProperties
        {
            Persistent = true,
            MessageId = cloudEvent.Id,
        };
        ReadOnlyMemory<byte> body;
        long size;
        if (mode == ContentMode.Structured)
        {
            body = StructuredJson.Encode(cloudEvent);
            properties.ContentType = StructuredJson.MediaType + "; charset=utf-8";
            size = body.Length;
        }
        else
        {
            var headers = new Dictionary<string, object?>(StringComparer.Ordinal);
            size = 0;
            foreach (var (name, value) in CloudEventAttributeMap.ToAttributes(cloudEvent))
            {
                var key = HeaderNames.Get(name);
                // A string header goes on the wire as a UTF-8 long string, exactly like the same bytes would.
                headers[key] = value;
                size += key.Length + Encoding.UTF8.GetByteCount(value);
            }
            properties.Headers = headers;
            properties.ContentType = cloudEvent.DataContentType;
            body = CloudEventData.GetBytes(cloudEvent) ?? [];
            size += body.Length + (cloudEvent.DataContentType?.Length ?? 0);
        }
        if (size > maxEventSizeBytes)
        {
            throw new EventTooLargeException(cloudEvent.Id ?? "?", size, maxEventSizeBytes, RabbitMqTransport.TransportName);
        }
        var routingKey = cloudEvent.Type is { Length: <= 255 } type && Encoding.UTF8.GetByteCount(type) <= 255 ? type : string.Empty;
        return (properties, body, routingKey);
    }

    /// <param name="properties">The message's properties.</param>
    /// <param name="body">The message body.</param>
    /// <param name="bodyIsOwned">True when <paramref name="body"/> is a copy the caller hands over: it then becomes the event's data without another copy.</param>
    public CloudEvent Decode(IReadOnlyBasicProperties properties, ReadOnlyMemory<byte> body, bool bodyIsOwned = false)
    {
        ArgumentNullException.ThrowIfNull(properties);
        if (StructuredJson.IsStructured(properties.ContentType))
        {
            return StructuredJson.Decode(body, properties.ContentType, extensionAttributes);
        }
        return CloudEventAttributeMap.FromProperties(
            properties.Headers ?? EmptyHeaders, HeaderValue, properties.ContentType, body, extensionAttributes,
            "The message carries no CloudEvents attributes (no cloudEvents_*/ce-* headers) and is not application/cloudevents+json.",
            dataIsOwned: bodyIsOwned);
    }

    internal static string? HeaderValue(object? value) => value switch
    {
        AmqpTimestamp ts => CloudEventAttributeType.Timestamp.Format(DateTimeOffset.FromUnixTimeSeconds(ts.UnixTime)),
        // An AMQP byte array (field type 'x'): the client wraps it; its bytes are the UTF-8 of the value.
        BinaryTableValue binary => StrictUtf8(binary.Bytes),
        byte[] bytes => StrictUtf8(bytes),
        // A nested table or a list cannot be an attribute's value.
        System.Collections.IDictionary or System.Collections.IList =>
            throw new InvalidCloudEventException($"A CloudEvents attribute header holds an AMQP {(value is System.Collections.IDictionary ? "table" : "array")}, which no attribute type allows."),
        _ => CloudEventAttributeMap.HeaderValueToString(value),
    };

    /// <summary>Attribute values are Unicode strings: bytes that are not UTF-8 make the message invalid, never a mangled value.</summary>
    private static string StrictUtf8(byte[] bytes)
    {
        try
        {
            return Utf8.GetString(bytes);
        }
        catch (DecoderFallbackException ex)
        {
            throw new InvalidCloudEventException($"A CloudEvents attribute header is not valid UTF-8 (byte {ex.Index}).", ex);
        }
    }

    private static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
}
