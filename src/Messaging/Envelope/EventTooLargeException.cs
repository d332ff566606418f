using Messaging.Publishing;

namespace Messaging.Envelope;

/// <summary>An event does not fit in one message of the selected transport.</summary>
public sealed class EventTooLargeException : EventPublishException
{
    /// <summary>Creates the exception for an event over a transport's size limit; it is never transient.</summary>
    /// <param name="eventId">The CloudEvent <c>id</c> of the event.</param>
    /// <param name="sizeBytes">The event's encoded size in bytes, as the transport measures it.</param>
    /// <param name="limitBytes">The transport's limit in bytes.</param>
    /// <param name="transport">The transport's name (<c>RabbitMQ</c>, <c>PubSub</c>, ...).</param>
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

    /// <summary>The CloudEvent <c>id</c> of the event that did not fit.</summary>
    public string EventId { get; }

    /// <summary>The event's encoded size in bytes (attributes, headers and data, as the transport counts them).</summary>
    public long SizeBytes { get; }

    /// <summary>The transport's largest event in bytes (its <c>MaxEventSizeBytes</c> setting).</summary>
    public long LimitBytes { get; }
}
