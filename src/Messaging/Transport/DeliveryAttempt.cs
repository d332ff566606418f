using System.Globalization;
using System.Text;

namespace Messaging.Transport;

/// <summary>
/// Attempt numbers read from the wire come from the broker and from retry copies (a count of attempts made before the copy),
/// and anyone who can publish to the broker can forge them. They are clamped, so that a negative or huge value can neither
/// start the count below 1 nor overflow it: a forged huge count only makes the first failure dead-letter the event.
/// </summary>
public static class DeliveryAttempt
{
    /// <summary>The highest attempt count taken from the wire.</summary>
    public const int MaxFromWire = 1_000_000;

    /// <summary>
    /// The attempt of a delivery: <paramref name="priorAttempts"/> (carried by a retry copy, if any) plus the broker's
    /// <paramref name="brokerDeliveries"/> of this copy (1 for its first delivery), each clamped to [0, <see cref="MaxFromWire"/>].
    /// </summary>
    public static int FromWire(long? priorAttempts, long brokerDeliveries) =>
        (int)Math.Clamp(priorAttempts ?? 0, 0, MaxFromWire) + (int)Math.Clamp(brokerDeliveries, 1, MaxFromWire);

    /// <summary>
    /// A count carried in a header or property, whatever type the broker client gave it (any integer type, a string, or
    /// UTF-8 bytes), clamped to [0, <see cref="MaxFromWire"/>]; null when it is not a whole number.
    /// </summary>
    public static int? CountFromWire(object? value)
    {
        long? count = value switch
        {
            int i => i,
            long l => l,
            short s => s,
            byte b => b,
            sbyte sb => sb,
            uint u => u,
            ushort us => us,
            ulong ul => ul > long.MaxValue ? long.MaxValue : (long)ul,
            string text => Parse(text),
            byte[] bytes => Parse(Encoding.UTF8.GetString(bytes)),
            _ => null,
        };
        return count is { } n ? (int)Math.Clamp(n, 0, MaxFromWire) : null;
    }

    private static long? Parse(string text) =>
        long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var parsed) ? parsed : null;
}
