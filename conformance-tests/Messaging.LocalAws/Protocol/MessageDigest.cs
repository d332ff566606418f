using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Messaging.LocalAws.Protocol;

/// <summary>
/// The MD5 digests SQS returns and the AWS SDKs verify: of the body (hex MD5 of its UTF-8 bytes) and of
/// the message attributes (hex MD5 over the attributes sorted by name, each encoded as length-prefixed
/// name, length-prefixed data type, one transport byte (1 string/number, 2 binary) and the length-prefixed
/// value; lengths are 4-byte big-endian).
/// </summary>
internal static class MessageDigest
{
    private const byte StringTransport = 1;
    private const byte BinaryTransport = 2;

    public static string OfBody(string body) => Convert.ToHexStringLower(MD5.HashData(Encoding.UTF8.GetBytes(body)));

    public static string? OfAttributes(IEnumerable<KeyValuePair<string, MessageAttribute>> attributes)
    {
        var sorted = attributes.OrderBy(pair => pair.Key, StringComparer.Ordinal).ToList();
        if (sorted.Count == 0)
        {
            return null;
        }

        using var buffer = new MemoryStream();
        foreach (var (name, attribute) in sorted)
        {
            WriteLengthPrefixed(buffer, Encoding.UTF8.GetBytes(name));
            WriteLengthPrefixed(buffer, Encoding.UTF8.GetBytes(attribute.DataType));
            if (attribute.IsBinary)
            {
                buffer.WriteByte(BinaryTransport);
                WriteLengthPrefixed(buffer, attribute.BinaryValue ?? []);
            }
            else
            {
                buffer.WriteByte(StringTransport);
                WriteLengthPrefixed(buffer, Encoding.UTF8.GetBytes(attribute.StringValue ?? string.Empty));
            }
        }

        return Convert.ToHexStringLower(MD5.HashData(buffer.ToArray()));
    }

    private static void WriteLengthPrefixed(MemoryStream buffer, byte[] bytes)
    {
        Span<byte> length = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(length, bytes.Length);
        buffer.Write(length);
        buffer.Write(bytes);
    }
}
