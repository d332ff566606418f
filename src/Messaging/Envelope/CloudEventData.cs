using System.Text;
using System.Text.Json;
using CloudNative.CloudEvents;

namespace Messaging.Envelope;

/// <summary>
/// Normalises CloudEvent data to bytes. Transports only ever see <c>byte[]</c> (or no data), which keeps
/// every wire mapping byte-exact.
/// </summary>
public static class CloudEventData
{
    /// <summary>Returns the event's data as bytes, or <c>null</c> when it has none.</summary>
    public static byte[]? GetBytes(CloudEvent cloudEvent, JsonSerializerOptions? jsonOptions = null)
    {
        ArgumentNullException.ThrowIfNull(cloudEvent);
        return cloudEvent.Data switch
        {
            null => null,
            byte[] bytes => bytes,
            ReadOnlyMemory<byte> memory => memory.ToArray(),
            Memory<byte> memory => memory.ToArray(),
            string text => Encoding.UTF8.GetBytes(text),
            JsonElement element => Encoding.UTF8.GetBytes(element.GetRawText()),
            var other => JsonSerializer.SerializeToUtf8Bytes(other, other.GetType(), jsonOptions),
        };
    }

    /// <summary>Replaces non-byte data with its byte form, in place.</summary>
    public static void Normalize(CloudEvent cloudEvent, JsonSerializerOptions? jsonOptions = null)
    {
        ArgumentNullException.ThrowIfNull(cloudEvent);
        if (cloudEvent.Data is null or byte[])
        {
            return;
        }
        if (cloudEvent.Data is not (string or JsonElement or ReadOnlyMemory<byte> or Memory<byte>) && cloudEvent.DataContentType is null)
        {
            cloudEvent.DataContentType = "application/json";
        }
        cloudEvent.Data = GetBytes(cloudEvent, jsonOptions);
    }
}
