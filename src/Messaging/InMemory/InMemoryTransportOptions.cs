namespace Messaging.InMemory;

/// <summary>Settings of the in-memory transport (<c>Messaging:InMemory</c>).</summary>
public sealed class InMemoryTransportOptions
{
    /// <summary>Most events waiting in one subscription; publishers wait (backpressure) when it is full.</summary>
    public int QueueCapacity { get; set; } = 100_000;

    /// <summary>The largest event accepted, in bytes (data plus attributes).</summary>
    public int MaxEventSizeBytes { get; set; } = 1024 * 1024;

    /// <summary>
    /// Times a message may come back unsettled (its consumer crashed or was forced to stop) before the broker moves it to
    /// the dead letters by itself, with reason <c>DeliveryLimitExceeded</c>: the safety net every broker has against a
    /// message that kills its consumer every time.
    /// </summary>
    public int CrashDeliveryLimit { get; set; } = 10;
}
