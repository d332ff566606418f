using Messaging.Publishing;

namespace Messaging.Envelope;

/// <summary>An event does not fit in one message of the selected transport.</summary>
public sealed class EventTooLargeException : EventPublishException
{
    public EventTooLargeException(string eventId, long sizeBytes, long limitBytes, string transport)
        : base($"CloudEvent '{eventId}' encodes to {sizeBytes} bytes, above the {limitBytes}-byte limit of the {transport} transport. " +
               "Store large payloads elsewhere and publish a reference (claim check), or raise the transport's size limit where the broker allows it.",
               innerException: null, isTransient: false)
    {
        Transport = transport;
        EventId = eventId;
        SizeBytes = sizeBytes;
        LimitBytes = limitBytes;
    }

    public string EventId { get; }

    public long SizeBytes { get; }

    public long LimitBytes { get; }
}
