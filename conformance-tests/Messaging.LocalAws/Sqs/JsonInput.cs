using System.Text.Json;
using Messaging.LocalAws.Protocol;

namespace Messaging.LocalAws.Sqs;

/// <summary>Typed reads of AWS JSON 1.0 request members; a member of the wrong JSON type is a serialization error.</summary>
internal static class JsonInput
{
    public static string? String(JsonElement parent, string name)
    {
        if (!parent.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        return value.ValueKind == JsonValueKind.String ? value.GetString() : throw Mistyped(name, "a string");
    }

    public static int? Integer(JsonElement parent, string name)
    {
        if (!parent.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        if (value.ValueKind != JsonValueKind.Number)
        {
            throw Mistyped(name, "a number");
        }

        return value.TryGetInt32(out var number)
            ? number
            : throw SqsErrors.InvalidParameterValue(name, value.GetRawText(), "The value must be a 32-bit integer.");
    }

    public static IReadOnlyList<string>? StringList(JsonElement parent, string name)
    {
        if (!parent.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        if (value.ValueKind != JsonValueKind.Array)
        {
            throw Mistyped(name, "a list");
        }

        return value.EnumerateArray()
            .Select(item => item.ValueKind == JsonValueKind.String ? item.GetString()! : throw Mistyped(name, "a list of strings"))
            .ToList();
    }

    public static IReadOnlyDictionary<string, string>? StringMap(JsonElement parent, string name)
    {
        if (!parent.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        if (value.ValueKind != JsonValueKind.Object)
        {
            throw Mistyped(name, "a map");
        }

        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var property in value.EnumerateObject())
        {
            map[property.Name] = property.Value.ValueKind == JsonValueKind.String
                ? property.Value.GetString()!
                : throw Mistyped($"{name}.{property.Name}", "a string");
        }

        return map;
    }

    public static IReadOnlyList<JsonElement>? ObjectList(JsonElement parent, string name)
    {
        if (!parent.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        if (value.ValueKind != JsonValueKind.Array)
        {
            throw Mistyped(name, "a list");
        }

        return value.EnumerateArray()
            .Select(item => item.ValueKind == JsonValueKind.Object ? item : throw Mistyped(name, "a list of structures"))
            .ToList();
    }

    /// <summary>Reads a <c>MessageAttributeValue</c> map; binary values are base64 in JSON.</summary>
    public static IReadOnlyDictionary<string, MessageAttribute>? MessageAttributes(JsonElement parent, string name)
    {
        if (!parent.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        if (value.ValueKind != JsonValueKind.Object)
        {
            throw Mistyped(name, "a map");
        }

        var attributes = new Dictionary<string, MessageAttribute>(StringComparer.Ordinal);
        foreach (var property in value.EnumerateObject())
        {
            var item = property.Value;
            if (item.ValueKind != JsonValueKind.Object)
            {
                throw Mistyped($"{name}.{property.Name}", "a MessageAttributeValue structure");
            }

            if (NonEmptyList(item, "StringListValues") || NonEmptyList(item, "BinaryListValues"))
            {
                throw SqsErrors.InvalidParameterValue(
                    $"Message attribute '{property.Name}' uses StringListValues/BinaryListValues, which SQS reserves and does not implement.");
            }

            byte[]? binary = null;
            if (String(item, "BinaryValue") is { } base64)
            {
                try
                {
                    binary = Convert.FromBase64String(base64);
                }
                catch (FormatException)
                {
                    throw Mistyped($"{name}.{property.Name}.BinaryValue", "base64-encoded binary data");
                }
            }

            attributes[property.Name] = new MessageAttribute(String(item, "DataType") ?? string.Empty, String(item, "StringValue"), binary);
        }

        return attributes;
    }

    private static bool NonEmptyList(JsonElement item, string name) =>
        item.TryGetProperty(name, out var list) && list.ValueKind == JsonValueKind.Array && list.GetArrayLength() > 0;

    private static AwsServiceException Mistyped(string member, string expected) =>
        SqsErrors.Serialization($"Member '{member}' must be {expected}.");
}
