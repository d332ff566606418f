using Messaging.Transport;
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

    /// <summary>A count carried in a header, clamped as every count from the wire is; the client wraps AMQP byte arrays.</summary>
    public static int? Count(object? value) => DeliveryAttempt.CountFromWire(value is BinaryTableValue binary ? binary.Bytes : value);
}
