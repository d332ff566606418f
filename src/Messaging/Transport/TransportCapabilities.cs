namespace Messaging.Transport;

/// <summary>What a transport supports. Anything not declared is refused with <see cref="NotSupportedException"/>, never faked.</summary>
public sealed record TransportCapabilities
{
    /// <summary>The largest event (data plus attributes, as encoded on the wire) the transport accepts.</summary>
    public required long MaxEventSizeBytes { get; init; }

    /// <summary>Events with the same <c>partitionkey</c> extension are handled in publish order when a subscription asks for it.</summary>
    public bool OrderingKeys { get; init; }

    /// <summary>
    /// The broker keeps accepted events across its own restart, and the transport reconnects by itself. False for a broker
    /// that keeps its state in memory (the in-memory transport, an emulator): the conformance suite then checks nothing
    /// about restarts for it.
    /// </summary>
    public bool SurvivesBrokerRestart { get; init; } = true;

    /// <summary>
    /// The transport reaches its broker over connections, links or streams that the broker or the network can close, and
    /// reconnects by itself. False for the in-memory transport, whose broker lives in the process: the conformance suite
    /// then checks nothing about closed connections for it.
    /// </summary>
    public bool ConnectsToBroker { get; init; } = true;

    /// <summary>
    /// The transport learns, while a handler runs, that the broker took the message's lease away (a lock lost, a receipt
    /// handle refused, the channel that held it closed) and cancels the handler's token; the broker then delivers the message
    /// again. False where the broker does not say which lease was lost (Pub/Sub's batched deadline extensions: the message
    /// simply comes back) or there are no leases (in-memory).
    /// </summary>
    public bool ReportsLostLeases { get; init; }
}
