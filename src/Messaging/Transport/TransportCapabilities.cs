namespace Messaging.Transport;

/// <summary>What a transport supports. Anything not declared is refused with <see cref="NotSupportedException"/>, never faked.</summary>
public sealed record TransportCapabilities
{
    /// <summary>The largest event (data plus attributes, as encoded on the wire) the transport accepts.</summary>
    public required long MaxEventSizeBytes { get; init; }

    /// <summary>Events with the same <c>partitionkey</c> extension are handled in publish order when a subscription asks for it.</summary>
    public bool OrderingKeys { get; init; }
}
