namespace Messaging.ConformanceTests.Infrastructure;

/// <summary>
/// A message as a foreign (or broken) producer sends it, below the CloudEvents layer: typed header values, a body and a
/// content type. Header values may be:
/// <list type="bullet">
/// <item><c>string</c>: the wire's string type;</item>
/// <item><c>byte[]</c>: the wire's binary type (RabbitMQ: the AMQP 0-9-1 byte-array field type, as the Java client sends
/// <c>byte[]</c>; Service Bus: AMQP binary; SQS: a <c>Binary</c> attribute; Pub/Sub and in-memory, whose attributes are
/// strings only: its base64 text);</item>
/// <item><see cref="Utf8Text"/>: a text header given as its raw UTF-8 bytes, possibly invalid (RabbitMQ: a long string,
/// which is how RabbitMQ.Client sends <c>byte[]</c>; elsewhere only valid UTF-8, sent as a string);</item>
/// <item><c>int</c>, <c>long</c>: the wire's integer types (SQS: <c>Number</c>; string-only wires: invariant text);</item>
/// <item><c>bool</c>: the wire's boolean (SQS and string-only wires: <c>true</c>/<c>false</c> text);</item>
/// <item><see cref="DateTimeOffset"/>: the wire's timestamp (RabbitMQ: AMQP timestamp, whole seconds; Service Bus: AMQP
/// timestamp; SQS and string-only wires: RFC 3339 text);</item>
/// <item><c>IDictionary&lt;string, object?&gt;</c> (nested table) and <c>IList&lt;object?&gt;</c> (array): RabbitMQ only.</item>
/// </list>
/// </summary>
/// <param name="Headers">Headers, application properties or message attributes, in order.</param>
/// <param name="Body">The body, byte for byte.</param>
/// <param name="ContentType">The wire's content type (property or attribute), or <c>null</c> for none.</param>
public sealed record RawMessage(IReadOnlyList<KeyValuePair<string, object?>> Headers, byte[] Body, string? ContentType)
{
    /// <summary>The message id a producer sets where the wire has one it controls (RabbitMQ <c>message_id</c>, Service Bus <c>MessageId</c>).</summary>
    public string? MessageId { get; init; }
}

/// <summary>A text header value given as its raw UTF-8 bytes, which need not be valid UTF-8.</summary>
public sealed record Utf8Text(byte[] Bytes)
{
    private static readonly System.Text.UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>The text, or <c>null</c> when the bytes are not valid UTF-8.</summary>
    public string? TryGetText()
    {
        try
        {
            return Strict.GetString(Bytes);
        }
        catch (System.Text.DecoderFallbackException)
        {
            return null;
        }
    }
}

/// <summary>Typed header values as text, for wires whose attributes are strings only (Pub/Sub, in-memory) or partly (SQS).</summary>
public static class RawValues
{
    /// <summary>
    /// The text a string-only wire carries for <paramref name="value"/>: strings as they are, bytes as base64, valid
    /// <see cref="Utf8Text"/> as its text, integers invariantly, booleans as <c>true</c>/<c>false</c>, timestamps in RFC 3339.
    /// <c>null</c> (with the reason) for values that have no text form on such a wire: nested tables, arrays, invalid UTF-8.
    /// </summary>
    public static string? AsText(object? value, out string? reason)
    {
        reason = null;
        switch (value)
        {
            case string text:
                return text;
            case byte[] bytes:
                return Convert.ToBase64String(bytes);
            case Utf8Text utf8:
                var decoded = utf8.TryGetText();
                reason = decoded is null ? "the bytes are not UTF-8 and the wire's strings are Unicode text" : null;
                return decoded;
            case int or long:
                return ((IFormattable)value).ToString(null, System.Globalization.CultureInfo.InvariantCulture);
            case bool flag:
                return flag ? "true" : "false";
            case DateTimeOffset time:
                return CloudNative.CloudEvents.CloudEventAttributeType.Timestamp.Format(time);
            case null:
                reason = "a header without a value";
                return null;
            default:
                reason = $"no string form for a {value.GetType().Name} (nested tables and arrays exist on AMQP 0-9-1 only)";
                return null;
        }
    }

    /// <summary>Why not every header value of <paramref name="message"/> has a text form on a string-only wire, or <c>null</c>.</summary>
    public static string? NotAllText(RawMessage message, string wire)
    {
        ArgumentNullException.ThrowIfNull(message);
        foreach (var (key, value) in message.Headers)
        {
            if (AsText(value, out var reason) is null)
            {
                return $"{wire}: header '{key}': {reason}";
            }
        }
        return null;
    }
}
