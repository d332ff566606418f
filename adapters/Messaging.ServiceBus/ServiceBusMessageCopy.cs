using Azure.Messaging.ServiceBus;
using Messaging.Transport;

namespace Messaging.ServiceBus;

/// <summary>Copies of a received message that are sent again (retry, replay), and the attempt count read from it.</summary>
internal static class ServiceBusMessageCopy
{
    /// <summary>Attempts before this copy (carried by retry copies) plus the broker's count of deliveries of this copy.</summary>
    public static int AttemptOf(ServiceBusReceivedMessage message) =>
        DeliveryAttempt.FromWire(PriorAttempts(message.ApplicationProperties), message.DeliveryCount);

    /// <summary>The attempts a retry copy carries, clamped to what <see cref="DeliveryAttempt"/> accepts from the wire.</summary>
    public static int PriorAttempts(IReadOnlyDictionary<string, object> properties) =>
        properties.TryGetValue(ServiceBusNames.PriorAttemptsProperty, out var value) ? DeliveryAttempt.CountFromWire(value) ?? 0 : 0;

    /// <summary>A copy of a received message to send again: body and properties, without broker bookkeeping or <paramref name="strip"/>.</summary>
    public static ServiceBusMessage Copy(ServiceBusReceivedMessage message, Func<string, bool> strip)
    {
        var copy = new ServiceBusMessage(message);
        foreach (var key in copy.ApplicationProperties.Keys.Where(strip).ToList())
        {
            copy.ApplicationProperties.Remove(key);
        }
        // Dead-lettering stores these as properties; a copy is a fresh message.
        copy.ApplicationProperties.Remove("DeadLetterReason");
        copy.ApplicationProperties.Remove("DeadLetterErrorDescription");
        copy.ScheduledEnqueueTime = default;
        return copy;
    }
}
