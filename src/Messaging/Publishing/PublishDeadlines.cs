namespace Messaging.Publishing;

/// <summary>
/// The deadlines of publishes: one timer for all the publishes that start within the same slice of time (a sixteenth of
/// the timeout, at most 50 ms), firing a timeout after the slice ends. A publish thus times out between
/// <c>PublishTimeout</c> and a sixteenth more after it started; a timer of its own, created and cancelled on every publish,
/// cost an allocation and the timer queue's lock on every publish. A slice's timer fires once and is dropped; nothing else
/// holds it (each publish's registration on it goes with the publish).
/// </summary>
internal sealed class PublishDeadlines
{
    private readonly TimeSpan _timeout;
    private readonly TimeProvider _time;
    private readonly long _sliceLength; // in the time provider's timestamp units
    private readonly Lock _lock = new();
    private Slice? _current;

    public PublishDeadlines(TimeSpan timeout, TimeProvider time)
    {
        _timeout = timeout;
        _time = time;
        var slice = TimeSpan.FromTicks(Math.Min(timeout.Ticks / 16, TimeSpan.FromMilliseconds(50).Ticks));
        _sliceLength = Math.Max(1, (long)(slice.TotalSeconds * time.TimestampFrequency));
    }

    /// <summary>The timer of the current slice: cancelled a timeout after the slice ends.</summary>
    public CancellationTokenSource Current()
    {
        var index = _time.GetTimestamp() / _sliceLength;
        var current = Volatile.Read(ref _current);
        if (current is not null && current.Index == index)
        {
            return current.Timer;
        }
        lock (_lock)
        {
            current = _current;
            if (current is null || current.Index != index)
            {
                var sliceEnds = TimeSpan.FromSeconds((double)((index + 1) * _sliceLength - _time.GetTimestamp()) / _time.TimestampFrequency);
                current = new Slice(index, new CancellationTokenSource(_timeout + (sliceEnds > TimeSpan.Zero ? sliceEnds : TimeSpan.Zero), _time));
                Volatile.Write(ref _current, current);
            }
            return current.Timer;
        }
    }

    private sealed record Slice(long Index, CancellationTokenSource Timer);
}
