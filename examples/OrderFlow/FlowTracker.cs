using System.Collections.Concurrent;

namespace OrderFlow;

/// <summary>Counts what happened so the example knows when it is done.</summary>
public sealed class FlowTracker
{
    private readonly ConcurrentDictionary<string, byte> _paid = new();
    private readonly ConcurrentDictionary<string, byte> _shipped = new();

    public void Paid(string orderId) => _paid.TryAdd(orderId, 0);

    public void Shipped(string orderId) => _shipped.TryAdd(orderId, 0);

    public int ShippedCount => _shipped.Count;
}
