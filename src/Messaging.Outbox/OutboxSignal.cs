namespace Messaging.Outbox;

/// <summary>Wakes the relay when this process wrote outbox rows.</summary>
internal sealed class OutboxSignal(TimeProvider time) : IDisposable
{
    private readonly SemaphoreSlim _written = new(0, 1);
    private long _lastWritten = long.MinValue;

    public void Notify()
    {
        Volatile.Write(ref _lastWritten, time.GetTimestamp());
        if (_written.CurrentCount == 0)
        {
            try
            {
                _written.Release();
            }
            catch (SemaphoreFullException)
            {
                // Another writer woke the relay at the same moment; once is enough.
            }
        }
    }

    /// <summary>True when rows were written within <paramref name="period"/>: their transaction may commit any moment.</summary>
    public bool WrittenWithin(TimeSpan period)
    {
        var last = Volatile.Read(ref _lastWritten);
        return last != long.MinValue && time.GetElapsedTime(last) < period;
    }

    /// <summary>Waits for a write or the timeout; true when woken by a write.</summary>
    public Task<bool> WaitAsync(TimeSpan timeout, CancellationToken cancellationToken) => _written.WaitAsync(timeout, cancellationToken);

    public void Dispose() => _written.Dispose();
}
