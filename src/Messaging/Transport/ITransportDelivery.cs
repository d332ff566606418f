using CloudNative.CloudEvents;
using Messaging.DeadLetters;

namespace Messaging.Transport;

/// <summary>One message received from a broker, not yet settled.</summary>
internal interface ITransportDelivery
{
    /// <summary>The decoded event, or <c>null</c> when the message is not a valid CloudEvent (see <see cref="DecodeError"/>).</summary>
    CloudEvent? Event { get; }

    /// <summary>Why the message could not be decoded, when <see cref="Event"/> is <c>null</c>.</summary>
    string? DecodeError { get; }

    /// <summary>The delivery attempt, starting at 1, as counted by the broker (it survives consumer crashes).</summary>
    int Attempt { get; }

    /// <summary>The subscription the message was received on.</summary>
    string Subscription { get; }

    /// <summary>The broker's own identifier of the message, for logs.</summary>
    string? MessageId { get; }

    /// <summary>
    /// True when a failed attempt is retried in this process rather than by the broker: the message belongs to an ordering
    /// key of an ordered subscription and the broker's retry would let later messages of the key overtake it. The processor
    /// then waits out the backoff holding the message (its lease is renewed) and runs the handlers again.
    /// </summary>
    bool RetriesInPlace { get; }

    /// <summary>Fires when the consumer starts to stop; a held retry gives its message back then instead of waiting.</summary>
    CancellationToken StopRequested { get; }

    /// <summary>Gives the message back to the broker unsettled (it is delivered again, with the broker's next attempt number).</summary>
    Task GiveBackAsync();

    /// <summary>Acknowledges the message; it will not be delivered again.</summary>
    Task CompleteAsync(CancellationToken cancellationToken);

    /// <summary>Schedules another delivery of the same message after <paramref name="delay"/> with the attempt number incremented.</summary>
    Task RetryAsync(TimeSpan delay, CancellationToken cancellationToken);

    /// <summary>Moves the message, unchanged, to the subscription's dead-letter destination with <paramref name="metadata"/>.</summary>
    Task DeadLetterAsync(DeadLetterMetadata metadata, CancellationToken cancellationToken);
}
