using System.Text.Json;
using Amazon.SQS.Model;
using Messaging.DeadLetters;

namespace Messaging.Aws;

/// <summary>Conversions between SQS message attributes and the string attributes the codec works with.</summary>
internal static class SqsMessageAttributes
{
    /// <summary>String and Number attributes as their text; Binary ones as base64 (CloudEvents' string form of binary).</summary>
    public static List<KeyValuePair<string, string>> ToStrings(Dictionary<string, MessageAttributeValue>? attributes, bool includeDeadLetterMetadata = false)
    {
        var result = new List<KeyValuePair<string, string>>();
        if (attributes is null)
        {
            return result;
        }
        foreach (var (name, value) in attributes)
        {
            if (!includeDeadLetterMetadata && name == SnsSqsCodec.DeadLetterMetadataAttribute)
            {
                continue;
            }
            var text = value.StringValue ?? (value.BinaryValue is { } binary ? Convert.ToBase64String(binary.ToArray()) : null);
            if (text is not null)
            {
                result.Add(new(name, text));
            }
        }
        return result;
    }

    public static Dictionary<string, MessageAttributeValue> FromStrings(IEnumerable<KeyValuePair<string, string>> attributes) =>
        attributes.ToDictionary(a => a.Key, a => new MessageAttributeValue { DataType = SnsSqsCodec.StringDataType, StringValue = a.Value }, StringComparer.Ordinal);

    /// <summary>A copy of a message's attributes (data types kept), without our dead-letter metadata.</summary>
    public static Dictionary<string, MessageAttributeValue> Copy(Dictionary<string, MessageAttributeValue>? attributes)
    {
        var copy = new Dictionary<string, MessageAttributeValue>(StringComparer.Ordinal);
        if (attributes is null)
        {
            return copy;
        }
        foreach (var (name, value) in attributes)
        {
            if (name == SnsSqsCodec.DeadLetterMetadataAttribute)
            {
                continue;
            }
            copy[name] = new MessageAttributeValue
            {
                DataType = value.DataType,
                StringValue = value.StringValue,
                BinaryValue = value.BinaryValue is { } binary ? new MemoryStream(binary.ToArray()) : null,
            };
        }
        return copy;
    }

    public static string EncodeMetadata(DeadLetterMetadata metadata) =>
        JsonSerializer.Serialize(metadata.ToProperties().ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal));

    /// <summary>Reads the metadata attribute; an absent or unreadable one yields an empty lookup.</summary>
    public static Func<string, string?> DecodeMetadata(Dictionary<string, MessageAttributeValue>? attributes)
    {
        if (attributes is null || !attributes.TryGetValue(SnsSqsCodec.DeadLetterMetadataAttribute, out var value) || value.StringValue is null)
        {
            return _ => null;
        }
        try
        {
            var map = JsonSerializer.Deserialize<Dictionary<string, string>>(value.StringValue) ?? [];
            return key => map.TryGetValue(key, out var v) ? v : null;
        }
        catch (JsonException)
        {
            return _ => null;
        }
    }

    public static int? ReceiveCount(Message message) =>
        message.Attributes is not null && message.Attributes.TryGetValue("ApproximateReceiveCount", out var text)
            && int.TryParse(text, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var count)
            ? count
            : null;
}
