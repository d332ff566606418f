using System.Globalization;
using RabbitMQ.Client;

namespace Messaging.RabbitMQ;

/// <summary>Copies of a received message that are sent again (retry, dead letter, replay), and numbers read from its headers.</summary>
internal static class RabbitMqMessageCopy
{
    /// <summary>Headers of a copy: the original's, minus what the broker added, plus <paramref name="extra"/>.</summary>
    public static Dictionary<string, object?> Headers(IReadOnlyBasicProperties properties, IEnumerable<KeyValuePair<string, object?>> extra)
    {
        var headers = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (properties.Headers is { } original)
        {
            foreach (var (key, value) in original)
            {
                if (key.StartsWith("x-", StringComparison.Ordinal))
                {
                    continue; // x-death, x-delivery-count, x-first-death-*: broker bookkeeping of the old copy
                }
                headers[key] = value;
            }
        }
        foreach (var (key, value) in extra)
        {
            headers[key] = value;
        }
        return headers;
    }

    public static BasicProperties Properties(IReadOnlyBasicProperties source, Dictionary<string, object?> headers) => new()
    {
        Persistent = true,
        ContentType = source.ContentType,
        ContentEncoding = source.ContentEncoding,
        MessageId = source.MessageId,
        CorrelationId = source.CorrelationId,
        Type = source.Type,
        AppId = source.AppId,
        Timestamp = source.Timestamp,
        Headers = headers,
    };

    /// <summary>A header read as a whole number, whatever AMQP field type carried it; null when it is not one.</summary>
    public static long? ToLong(object? value) => value switch
    {
        int i => i,
        long l => l,
        short s => s,
        byte b => b,
        sbyte sb => sb,
        uint u => u,
        ushort us => us,
        ulong ul => ul > long.MaxValue ? long.MaxValue : (long)ul,
        byte[] bytes => Parse(System.Text.Encoding.UTF8.GetString(bytes)),
        BinaryTableValue binary => Parse(System.Text.Encoding.UTF8.GetString(binary.Bytes)),
        string s => Parse(s),
        _ => null,
    };

    private static long? Parse(string text) =>
        long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var parsed) ? parsed : null;
}
