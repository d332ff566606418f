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
public sealed class RabbitMqCloudEventCodec(RabbitMqContentMode mode, IReadOnlyList<CloudEventAttribute> extensionAttributes, long maxEventSizeBytes)
{
    private static readonly string[] AcceptedPrefixes = ["cloudEvents_", "cloudEvents:", "ce-", "ce_"];

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
        if (mode == RabbitMqContentMode.Structured)
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
                var key = RabbitMqNames.AttributePrefix + name;
                var bytes = Encoding.UTF8.GetBytes(value);
                headers[key] = bytes;
                size += key.Length + bytes.Length;
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

    public CloudEvent Decode(IReadOnlyBasicProperties properties, ReadOnlyMemory<byte> body)
    {
        ArgumentNullException.ThrowIfNull(properties);
        if (StructuredJson.IsStructured(properties.ContentType))
        {
            return StructuredJson.Decode(body, properties.ContentType, extensionAttributes);
        }
        var attributes = new List<KeyValuePair<string, string>>();
        string? contentType = properties.ContentType;
        if (properties.Headers is { } headers)
        {
            foreach (var (key, value) in headers)
            {
                var name = StripPrefix(key);
                if (name is null || HeaderValue(value) is not { } text)
                {
                    continue;
                }
                if (name == "datacontenttype")
                {
                    contentType ??= text;
                    continue;
                }
                attributes.Add(new(name, text));
            }
        }
        if (attributes.Count == 0)
        {
            throw new InvalidCloudEventException(
                "The message carries no CloudEvents attributes (no cloudEvents_*/ce-* headers) and is not application/cloudevents+json.");
        }
        return CloudEventAttributeMap.FromAttributes(attributes, contentType, body, extensionAttributes);
    }

    internal static string? HeaderValue(object? value) => value switch
    {
        AmqpTimestamp ts => CloudEventAttributeType.Timestamp.Format(DateTimeOffset.FromUnixTimeSeconds(ts.UnixTime)),
        _ => CloudEventAttributeMap.HeaderValueToString(value),
    };

    private static string? StripPrefix(string key)
    {
        foreach (var prefix in AcceptedPrefixes)
        {
            if (key.Length > prefix.Length && key.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
            {
                return key[prefix.Length..].ToLowerInvariant();
            }
        }
        return null;
    }
}
