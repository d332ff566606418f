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
}

/// <summary>What a graceful stop does with messages that were received but whose handler has not started.</summary>
public enum StopBehavior
{
    /// <summary>Give them back to the broker at once (the broker counts that as a delivery).</summary>
    ReturnUnstarted,

    /// <summary>Handle them before the stop completes: giving back would cost each one a delivery attempt.</summary>
    HandleReceived,
}
