namespace Messaging.Transport;

/// <summary>
/// A transport's receive loop for one subscription: it takes messages from the broker and submits them to the
/// <see cref="ReceivePipeline"/>, which owns everything else (concurrency, settling, lease renewal, ordering, stop).
/// </summary>
public interface ITransportReceiver : IAsyncDisposable
{
    /// <summary>What a graceful stop does with messages received but not yet handed to a handler.</summary>
    StopBehavior StopBehavior { get; }

    /// <summary>How often held messages need their lease extended; null when the broker holds them without one.</summary>
    TimeSpan? LeaseRenewalInterval { get; }

    /// <summary>
    /// True when the receiver reports lost leases (<see cref="ReceivedMessage.ReportLeaseLost"/>) while handlers run: each
    /// handler then gets a token of its own, cancelled when its message's lease is lost. By default, receivers that renew
    /// leases; a receiver whose leases end otherwise (the channel they came on closed) says so.
    /// </summary>
    bool ReportsLostLeases => LeaseRenewalInterval is not null;

    /// <summary>
    /// Extends the leases of <paramref name="messages"/> (all held: waiting for a handler or being handled). A message whose
    /// lease is gone for good is reported with <see cref="ReceivedMessage.ReportLeaseLost"/>; a transient failure is logged
    /// and simply tried again at the next renewal; <see cref="ReceivedMessage.LeasedAt"/> is set for each one extended.
    /// </summary>
    Task RenewLeasesAsync(IReadOnlyList<ReceivedMessage> messages, CancellationToken cancellationToken);

    /// <summary>Stops taking messages from the broker. Once it completes, nothing more is submitted.</summary>
    Task StopReceivingAsync(CancellationToken cancellationToken);

    /// <summary>Called once every received message is settled after a graceful stop (flush what the receiver batches).</summary>
    Task DrainedAsync(CancellationToken cancellationToken);

    /// <summary>
    /// True when the receiver gives several messages back in one call to the broker (<see cref="ReturnTogetherAsync"/>). The
    /// pipeline then gives back the messages of an ordering key that it holds together, in arrival order, instead of one
    /// call after the other, and an abort takes a key's running message before cancelling its handler, so that it goes back
    /// in the same call. A broker that goes on with a key as soon as some of its messages are back (the Pub/Sub emulator
    /// does) then never delivers a later message of the key elsewhere while an earlier one is still leased to this consumer.
    /// False by default.
    /// </summary>
    bool ReturnsTogether => false;

    /// <summary>
    /// Gives <paramref name="messages"/> (messages of one ordering key, in arrival order, each received by this receiver)
    /// back to the broker, in as few calls as the broker allows, in this order, each answered before the next is made. Called
    /// only when <see cref="ReturnsTogether"/> is true; as <see cref="ReceivedMessage.ReturnAsync"/>, best effort.
    /// </summary>
    Task ReturnTogetherAsync(IReadOnlyList<ReceivedMessage> messages, CancellationToken cancellationToken) =>
        throw new NotSupportedException($"{GetType().Name} does not give messages back together.");
}

/// <summary>What a graceful stop does with messages that were received but whose handler has not started.</summary>
public enum StopBehavior
{
    /// <summary>Give them back to the broker at once (the broker counts that as a delivery).</summary>
    ReturnUnstarted,

    /// <summary>Handle them before the stop completes: giving back would cost each one a delivery attempt.</summary>
    HandleReceived,
}
