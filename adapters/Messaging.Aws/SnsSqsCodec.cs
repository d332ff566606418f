using System.Text;
using System.Text.Json;
using CloudNative.CloudEvents;
using Messaging.Envelope;

namespace Messaging.Aws;

/// <summary>A message as it travels through SNS and SQS: a text body and string message attributes.</summary>
internal sealed record SqsWireMessage(string Body, IReadOnlyList<KeyValuePair<string, string>> Attributes)
{
    /// <summary>What AWS counts against its 256 KiB limit: the body plus each attribute's name, data type and value, in UTF-8.</summary>
    public int WireSize
    {
        get
        {
            var size = Encoding.UTF8.GetByteCount(Body);
            foreach (var (name, value) in Attributes)
            {
                size += Encoding.UTF8.GetByteCount(name) + SnsSqsCodec.StringDataType.Length + Encoding.UTF8.GetByteCount(value);
            }
            return size;
        }
    }
}

/// <summary>
/// CloudEvents over SNS/SQS. No official binding exists; SNS and SQS carry a text body and at most 10 message attributes.
/// <list type="bullet">
/// <item>Binary mode, used whenever it fits: each attribute as a String message attribute <c>ce_{name}</c>,
/// <c>datacontenttype</c> as <c>content-type</c>, the data as the body. It fits when the data is non-empty text (valid
/// UTF-8 using only characters SQS allows), every attribute value is non-empty and SQS-legal, and at most 9 message
/// attributes are needed (the 10th is kept free for dead-letter metadata).</item>
/// <item>Otherwise structured mode: the whole event as an <c>application/cloudevents+json</c> body (binary data as
/// <c>data_base64</c>) and one attribute, <c>content-type</c>. So no event ever fails on the attribute limit.</item>
/// </list>
/// On receive, attribute prefixes <c>ce_</c>, <c>ce-</c>, <c>cloudEvents_</c> and <c>cloudEvents:</c> are accepted,
/// a content type of <c>application/cloudevents+json</c> (or, without any attributes, a JSON body with
/// <c>specversion</c>) means structured mode, and an SNS notification envelope (raw delivery off) is unwrapped first.
/// </summary>
internal sealed class SnsSqsCodec
{
    /// <summary>SQS's and SNS's limit on one message: body plus attributes.</summary>
    public const int MaxWireBytes = 256 * 1024;

    /// <summary>
    /// Default event limit (data plus attribute values): 192 KiB, so that even binary data, base64-encoded in structured
    /// mode, stays within <see cref="MaxWireBytes"/>.
    /// </summary>
    public const int DefaultMaxEventSizeBytes = 192 * 1024;

    /// <summary>SQS's limit on message attributes per message.</summary>
    public const int MaxMessageAttributes = 10;

    /// <summary>Attributes binary mode may use; one stays free for <see cref="DeadLetterMetadataAttribute"/>.</summary>
    public const int MaxBinaryModeAttributes = MaxMessageAttributes - 1;

    /// <summary>The prefix of CloudEvents attributes in binary mode.</summary>
    public const string AttributePrefix = "ce_";

    /// <summary>The message attribute that carries <c>datacontenttype</c> (binary mode) or the structured media type.</summary>
    public const string ContentTypeAttribute = "content-type";

    /// <summary>
    /// The one message attribute holding dead-letter metadata: a JSON object of the uniform properties
    /// (<c>deadletter-reason</c>, <c>deadletter-attempts</c>, ...). One attribute, because SQS allows only 10.
    /// </summary>
    public const string DeadLetterMetadataAttribute = "deadletter-metadata";

    internal const string StringDataType = "String";
    private const string StructuredContentType = StructuredJson.MediaType + "; charset=utf-8";
    // The default encoder escapes '+' in base64 data as six characters; relaxed escaping keeps data_base64 at 4/3 of the data.
    // Control characters are still escaped, so the body stays within the characters SQS accepts.
    private static readonly CloudNative.CloudEvents.SystemTextJson.JsonEventFormatter Formatter = new(
        new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }, default);

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private readonly IReadOnlyList<CloudEventAttribute> _extensionAttributes;
    private readonly long _maxEventSizeBytes;

    public SnsSqsCodec(IReadOnlyList<CloudEventAttribute> extensionAttributes, long maxEventSizeBytes = DefaultMaxEventSizeBytes)
    {
        _extensionAttributes = extensionAttributes ?? [];
        _maxEventSizeBytes = maxEventSizeBytes;
    }

    /// <summary>Encodes an event; throws <see cref="EventTooLargeException"/> when it exceeds the limit or, encoded, 256 KiB.</summary>
    public SqsWireMessage Encode(CloudEvent cloudEvent)
    {
        ArgumentNullException.ThrowIfNull(cloudEvent);
        var data = CloudEventData.GetBytes(cloudEvent);
        var attributes = new List<KeyValuePair<string, string>>();
        long size = data?.Length ?? 0;
        var binaryFits = true;
        foreach (var (name, value) in CloudEventAttributeMap.ToAttributes(cloudEvent))
        {
            size += Encoding.UTF8.GetByteCount(value);
            binaryFits &= value.Length > 0 && IsSqsText(value);
            attributes.Add(new(AttributePrefix + name, value));
        }
        if (cloudEvent.DataContentType is { } contentType)
        {
            size += Encoding.UTF8.GetByteCount(contentType);
            binaryFits &= contentType.Length > 0 && IsSqsText(contentType);
            attributes.Add(new(ContentTypeAttribute, contentType));
        }
        if (size > _maxEventSizeBytes)
        {
            throw new EventTooLargeException(cloudEvent.Id ?? "?", size, _maxEventSizeBytes, SnsSqsTransport.TransportName);
        }
        string? text = null;
        binaryFits &= attributes.Count <= MaxBinaryModeAttributes && data is { Length: > 0 } && TryGetSqsText(data, out text);
        var message = binaryFits
            ? new SqsWireMessage(text!, attributes)
            : EncodeStructured(cloudEvent);
        var wireSize = message.WireSize;
        if (wireSize > MaxWireBytes)
        {
            throw new EventTooLargeException(cloudEvent.Id ?? "?", wireSize, MaxWireBytes, SnsSqsTransport.TransportName);
        }
        return message;
    }

    /// <summary>The whole event as one <c>application/cloudevents+json</c> body.</summary>
    internal static SqsWireMessage EncodeStructured(CloudEvent cloudEvent) =>
        new(Encoding.UTF8.GetString(Formatter.EncodeStructuredModeMessage(cloudEvent, out _).Span), [new(ContentTypeAttribute, StructuredContentType)]);

    /// <summary>Decodes a received message; throws <see cref="InvalidCloudEventException"/> saying why it is not a CloudEvent.</summary>
    public CloudEvent Decode(string body, IReadOnlyList<KeyValuePair<string, string>> attributes) => Decode(body, attributes, unwrapEnvelope: true);

    private CloudEvent Decode(string body, IReadOnlyList<KeyValuePair<string, string>> attributes, bool unwrapEnvelope)
    {
        ArgumentNullException.ThrowIfNull(body);
        ArgumentNullException.ThrowIfNull(attributes);
        string? contentType = null;
        var ceAttributes = new List<KeyValuePair<string, string>>();
        foreach (var (key, value) in attributes)
        {
            if (key.Equals(ContentTypeAttribute, StringComparison.OrdinalIgnoreCase) || key.Equals("contentType", StringComparison.OrdinalIgnoreCase))
            {
                contentType ??= value;
                continue;
            }
            if (CloudEventAttributeMap.AttributeName(key) is not { } name)
            {
                continue;
            }
            if (name == "datacontenttype")
            {
                contentType ??= value;
                continue;
            }
            ceAttributes.Add(new(name, value));
        }
        if (StructuredJson.IsStructured(contentType))
        {
            return StructuredJson.Decode(Encoding.UTF8.GetBytes(body), contentType, _extensionAttributes);
        }
        if (ceAttributes.Count > 0)
        {
            return CloudEventAttributeMap.FromAttributes(ceAttributes, contentType, Encoding.UTF8.GetBytes(body), _extensionAttributes);
        }
        if (attributes.Count == 0 && body.AsSpan().TrimStart().StartsWith("{"))
        {
            if (unwrapEnvelope && TryUnwrapNotification(body, out var innerBody, out var innerAttributes))
            {
                return Decode(innerBody, innerAttributes, unwrapEnvelope: false);
            }
            if (LooksStructured(body))
            {
                return StructuredJson.Decode(Encoding.UTF8.GetBytes(body), StructuredJson.MediaType, _extensionAttributes);
            }
        }
        throw new InvalidCloudEventException(
            "The message carries no CloudEvents attributes (no ce_*/ce-*/cloudEvents_* message attributes), is not application/cloudevents+json, and is not an SNS notification of one.");
    }

    /// <summary>An SNS notification envelope, delivered when a subscription does not use raw message delivery.</summary>
    internal static bool TryUnwrapNotification(string body, out string message, out IReadOnlyList<KeyValuePair<string, string>> attributes)
    {
        message = string.Empty;
        attributes = [];
        try
        {
            using var document = JsonDocument.Parse(body);
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object
                || !root.TryGetProperty("Type", out var type) || type.ValueKind != JsonValueKind.String || type.GetString() != "Notification"
                || !root.TryGetProperty("TopicArn", out _)
                || !root.TryGetProperty("Message", out var inner) || inner.ValueKind != JsonValueKind.String)
            {
                return false;
            }
            message = inner.GetString()!;
            var list = new List<KeyValuePair<string, string>>();
            if (root.TryGetProperty("MessageAttributes", out var map) && map.ValueKind == JsonValueKind.Object)
            {
                foreach (var attribute in map.EnumerateObject())
                {
                    if (attribute.Value.ValueKind == JsonValueKind.Object
                        && attribute.Value.TryGetProperty("Value", out var value) && value.ValueKind == JsonValueKind.String)
                    {
                        list.Add(new(attribute.Name, value.GetString()!));
                    }
                }
            }
            attributes = list;
            return true;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    private static bool LooksStructured(string body)
    {
        try
        {
            using var document = JsonDocument.Parse(body);
            return document.RootElement.ValueKind == JsonValueKind.Object && document.RootElement.TryGetProperty("specversion", out _);
        }
        catch (JsonException)
        {
            // Corrupt JSON without a structured content type: not recognisably a CloudEvent at all.
            return false;
        }
    }

    private static bool TryGetSqsText(byte[] data, out string? text)
    {
        try
        {
            text = StrictUtf8.GetString(data);
        }
        catch (DecoderFallbackException)
        {
            text = null;
            return false;
        }
        return IsSqsText(text);
    }

    /// <summary>SQS accepts #x9, #xA, #xD, #x20-#xD7FF, #xE000-#xFFFD and #x10000-#x10FFFF (well-formed surrogate pairs).</summary>
    internal static bool IsSqsText(string text)
    {
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (c is '\t' or '\n' or '\r' || (c >= 0x20 && c <= 0xD7FF) || (c >= 0xE000 && c <= 0xFFFD))
            {
                continue;
            }
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                i++;
                continue;
            }
            return false;
        }
        return true;
    }
}
