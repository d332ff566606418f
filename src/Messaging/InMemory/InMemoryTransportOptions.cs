namespace Messaging.InMemory;

/// <summary>Settings of the in-memory transport (<c>Messaging:InMemory</c>).</summary>
public sealed class InMemoryTransportOptions
{
    /// <summary>Most events waiting in one subscription; publishers wait (backpressure) when it is full.</summary>
    public int QueueCapacity { get; set; } = 100_000;

    /// <summary>The largest event accepted, in bytes (data plus attributes).</summary>
    public int MaxEventSizeBytes { get; set; } = 1024 * 1024;
}
