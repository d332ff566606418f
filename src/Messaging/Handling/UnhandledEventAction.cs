namespace Messaging.Handling;

/// <summary>What a subscription does with an event whose type none of its handlers accepts.</summary>
public enum UnhandledEventAction
{
    /// <summary>Acknowledge and drop it (a topic often carries types a subscription does not care about).</summary>
    Complete,

    /// <summary>Move it to the dead-letter destination with reason <see cref="DeadLetters.DeadLetterReason.NoHandler"/>.</summary>
    DeadLetter,
}
