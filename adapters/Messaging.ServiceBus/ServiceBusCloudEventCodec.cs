using System.Text;
using Azure.Messaging.ServiceBus;
using CloudNative.CloudEvents;
using Messaging.Envelope;

namespace Messaging.ServiceBus;

/// <summary>
/// CloudEvents over Service Bus, following the CloudEvents AMQP 1.0 protocol binding. Binary mode: every attribute is
/// an application property named <c>cloudEvents_{attribute}</c> holding the attribute's canonical string form (strings
/// keep timestamps and URIs exact, where AMQP timestamps would cut them to milliseconds), <c>datacontenttype</c> is the
/// message's content type and the data is the body. The CloudEvent <c>id</c> is also the MessageId (so Service Bus
/// duplicate detection applies to re-published events; ids above Service Bus's 128 characters are left to the broker's
/// own message id) and, when configured, <c>subject</c> is also the message Subject. On receive, the prefixes
/// <c>cloudEvents_</c>, <c>cloudEvents:</c>, <c>ce-</c> and <c>ce_</c> are accepted, native AMQP property types are read
/// back into canonical strings, and a content type of <c>application/cloudevents+json</c> means structured mode.
/// </summary>
internal sealed class ServiceBusCloudEventCodec(
    ContentMode mode,
    IReadOnlyList<CloudEventAttribute> extensionAttributes,
    long maxEventSizeBytes,
    bool copySubject = true)
{
    /// <summary>Service Bus's limit on MessageId.</summary>
    public const int MaxMessageIdLength = 128;

    /// <summary>Encodes an event; throws <see cref="EventTooLargeException"/> above the size limit.</summary>
    public ServiceBusMessage Encode(CloudEvent cloudEvent)
    {
        ArgumentNullException.ThrowIfNull(cloudEvent);
        var message = new ServiceBusMessage();
        long size = 0;
        if (cloudEvent.Id is { Length: > 0 and <= MaxMessageIdLength } id)
        {
            message.MessageId = id;
            size += id.Length;
        }
        message.SessionId = SessionIdOf(cloudEvent);
        size += message.SessionId.Length;
        if (copySubject && cloudEvent.Subject is { Length: > 0 } subject)
        {
            message.Subject = subject;
            size += Encoding.UTF8.GetByteCount(subject);
        }
        if (mode == ContentMode.Structured)
        {
            var body = StructuredJson.Encode(cloudEvent);
            message.Body = new BinaryData(body);
            message.ContentType = StructuredJson.MediaType + "; charset=utf-8";
            size += body.Length + message.ContentType.Length;
        }
        else
        {
            foreach (var (name, value) in CloudEventAttributeMap.ToAttributes(cloudEvent))
            {
                var key = AttributePrefixed(name);
                message.ApplicationProperties[key] = value;
                size += key.Length + Encoding.UTF8.GetByteCount(value);
            }
            var data = CloudEventData.GetBytes(cloudEvent) ?? [];
            message.Body = new BinaryData(data);
            message.ContentType = cloudEvent.DataContentType;
            size += data.Length + (cloudEvent.DataContentType?.Length ?? 0);
        }
        if (size > maxEventSizeBytes)
        {
            throw new EventTooLargeException(cloudEvent.Id ?? "?", size, maxEventSizeBytes, ServiceBusTransport.TransportName);
        }
        return message;
    }

    /// <summary>
    /// The SessionId of an event: its <c>partitionkey</c>, so that an ordered (session-enabled) subscription delivers a key
    /// in order; for an event without one, its <c>id</c>, which makes it a session of its own, handled without order like
    /// on an unordered subscription (a session-enabled subscription dead-letters a message without SessionId). Values
    /// longer than Service Bus's 128 characters become <c>sha256:</c> and the hex SHA-256 of their UTF-8 bytes, one
    /// session per value still. Subscriptions without sessions ignore it.
    /// </summary>
    public static string SessionIdOf(CloudEvent cloudEvent)
    {
        var value = cloudEvent["partitionkey"] as string is { Length: > 0 } key ? key : cloudEvent.Id ?? string.Empty;
        return value.Length <= MaxMessageIdLength
            ? value
            : "sha256:" + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(value)));
    }

    /// <summary>Decodes a received message; throws <see cref="InvalidCloudEventException"/> when it is not a CloudEvent.</summary>
    public CloudEvent Decode(ServiceBusReceivedMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        return Decode(message.ContentType, message.ApplicationProperties, message.Body.ToMemory());
    }

    /// <summary>Decodes the parts of a message that carry a CloudEvent.</summary>
    public CloudEvent Decode(string? contentType, IReadOnlyDictionary<string, object> applicationProperties, ReadOnlyMemory<byte> body)
    {
        ArgumentNullException.ThrowIfNull(applicationProperties);
        if (StructuredJson.IsStructured(contentType))
        {
            return StructuredJson.Decode(body, contentType, extensionAttributes);
        }
        return CloudEventAttributeMap.FromProperties(
            applicationProperties, PropertyValue, contentType, body, extensionAttributes,
            "The message carries no CloudEvents attributes (no cloudEvents_*/ce-* application properties) and is not application/cloudevents+json.");
    }

    /// <summary>The application property name of a CloudEvents attribute in binary mode.</summary>
    public static string AttributePrefixed(string attribute) => ServiceBusNames.AttributePrefix + attribute;

    /// <summary>
    /// The canonical string of an application property written by any producer: strings as they are, AMQP timestamps as
    /// RFC 3339, AMQP binary as base64 (the CloudEvents string form of Binary), numbers and booleans invariantly.
    /// </summary>
    internal static string? PropertyValue(object? value) => value switch
    {
        byte[] bytes => Convert.ToBase64String(bytes),
        ReadOnlyMemory<byte> memory => Convert.ToBase64String(memory.Span),
        BinaryData binary => Convert.ToBase64String(binary.ToMemory().Span),
        Uri uri => uri.OriginalString,
        _ => CloudEventAttributeMap.HeaderValueToString(value),
    };
}
