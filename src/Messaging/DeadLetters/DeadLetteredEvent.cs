using CloudNative.CloudEvents;

namespace Messaging.DeadLetters;

/// <summary>An event sitting in a dead-letter destination.</summary>
public sealed record DeadLetteredEvent
{
    /// <summary>The transport's identifier of the dead-lettered message, stable while it stays there; used to select events for replay.</summary>
    public required string DeadLetterId { get; init; }

    /// <summary>The event, or <c>null</c> when the message was dead-lettered because it is not a valid CloudEvent.</summary>
    public CloudEvent? Event { get; init; }

    /// <summary>The raw message body, exactly as received.</summary>
    public ReadOnlyMemory<byte> Body { get; init; }

    /// <summary>Why, when and from which subscription it was dead-lettered, after how many attempts; the same on every transport.</summary>
    public required DeadLetterMetadata Metadata { get; init; }
}
