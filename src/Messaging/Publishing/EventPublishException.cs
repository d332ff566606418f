namespace Messaging.Publishing;

/// <summary>
/// A publish failed: the broker did not durably accept every event. This is the one exception type
/// <see cref="IEventPublisher"/> throws for a failed publish, whatever the broker; the broker client's own exception is the
/// <see cref="Exception.InnerException"/>. Cancelling the caller's token throws <see cref="OperationCanceledException"/> instead.
/// Events of a failed call may still have been stored (at-least-once): publishing them again can duplicate, never lose.
/// </summary>
public class EventPublishException : Exception
{
    /// <summary>Creates the exception for a failed publish.</summary>
    /// <param name="message">What failed, naming the topic, the transport and the setting to change where one applies.</param>
    /// <param name="innerException">The broker client's exception, if any.</param>
    /// <param name="isTransient">Whether trying again later may succeed (see <see cref="IsTransient"/>).</param>
    public EventPublishException(string message, Exception? innerException, bool isTransient)
        : base(message, innerException)
    {
        IsTransient = isTransient;
    }

    /// <summary>
    /// True when trying again later may succeed: the broker was unreachable, restarting, throttling or blocking publishers, or
    /// did not confirm in time. False when the same publish will fail again (a topic that does not exist, an event too large,
    /// refused credentials).
    /// </summary>
    public bool IsTransient { get; }

    /// <summary>The topic of the failed publish, when known.</summary>
    public string? Topic { get; init; }

    /// <summary>The transport that failed (<c>RabbitMQ</c>, <c>PubSub</c>, ...), when known.</summary>
    public string? Transport { get; init; }
}
