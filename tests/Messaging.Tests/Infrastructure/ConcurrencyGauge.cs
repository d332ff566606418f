namespace Messaging.Tests.Infrastructure;

/// <summary>Counts handlers running at once and remembers the most ever seen (lock-free).</summary>
internal sealed class ConcurrencyGauge
{
    private int _current;
    private int _max;

    public int Current => Volatile.Read(ref _current);

    public int Max => Volatile.Read(ref _max);

    public void Enter()
    {
        var now = Interlocked.Increment(ref _current);
        var seen = Volatile.Read(ref _max);
        while (now > seen)
        {
            var previous = Interlocked.CompareExchange(ref _max, now, seen);
            if (previous == seen)
            {
                break;
            }
            seen = previous;
        }
    }

    public void Exit() => Interlocked.Decrement(ref _current);
}
