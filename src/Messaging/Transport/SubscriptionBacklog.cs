using Messaging.Topology;

namespace Messaging.Transport;

/// <summary>
/// How much work a subscription holds at the broker (<see cref="IMessageTransport.GetBacklogAsync"/>); each value is
/// null when the broker cannot say.
/// </summary>
/// <param name="Waiting">
/// Messages waiting in the subscription's queue. Which ones depends on the broker: ready messages only where it tells
/// them apart from those delivered and not yet settled (RabbitMQ, SQS, in-memory), every active message where it does not
/// (Service Bus).
/// </param>
/// <param name="DeadLetters">Messages in the subscription's dead-letter destination.</param>
/// <param name="OldestAge">How long the oldest waiting message has waited.</param>
public sealed record SubscriptionBacklog(long? Waiting, long? DeadLetters, TimeSpan? OldestAge)
{
    /// <summary>
    /// The most dead letters counted where the store can only count by peeking (<see cref="DeadLetters.IDeadLetterStore.CountAsync"/>):
    /// beyond it the count is a lower bound.
    /// </summary>
    public const int DeadLetterCountLimit = 1000;

    /// <summary>
    /// The dead-letter depth as <paramref name="transport"/>'s dead-letter store counts it, at most <see cref="DeadLetterCountLimit"/>
    /// where the store counts by peeking.
    /// </summary>
    public static async Task<long> CountDeadLettersAsync(IMessageTransport transport, SubscriptionDefinition subscription, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(transport);
        ArgumentNullException.ThrowIfNull(subscription);
        var count = await transport.DeadLetters.CountAsync(subscription.Name, DeadLetterCountLimit, cancellationToken).ConfigureAwait(false);
        return count.Count;
    }
}
