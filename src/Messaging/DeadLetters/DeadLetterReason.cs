namespace Messaging.DeadLetters;

/// <summary>Why an event was moved to a dead-letter destination.</summary>
public enum DeadLetterReason
{
    /// <summary>The reason was not recorded (for example, a message dead-lettered by another tool).</summary>
    Unknown,

    /// <summary>The handler failed on every one of the subscription's maximum delivery attempts.</summary>
    MaxAttemptsExceeded,

    /// <summary>A handler rejected the event as unprocessable.</summary>
    Rejected,

    /// <summary>The message is not a valid CloudEvent, or its data could not be read; it never reached a handler.</summary>
    InvalidMessage,

    /// <summary>No handler of the subscription accepts the event's type, and the subscription dead-letters such events.</summary>
    NoHandler,

    /// <summary>The broker's own delivery limit moved the message (consumers kept crashing before settling it).</summary>
    DeliveryLimitExceeded,
}
