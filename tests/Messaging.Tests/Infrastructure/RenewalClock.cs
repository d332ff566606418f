using Microsoft.Extensions.Time.Testing;

namespace Messaging.Tests.Infrastructure;

/// <summary>
/// Fake time for the pipeline's lease-renewal loop. It counts the timers the pipeline creates, so that a tick can wait until
/// the loop is waiting for its next delay, advance the clock by one interval, and wait until that renewal round is over
/// (the loop has armed its next delay): deterministic rounds without any sleep.
/// </summary>
internal sealed class RenewalClock(TimeSpan interval) : TimeProvider
{
    private readonly FakeTimeProvider _fake = new();
    private int _timersCreated;
    private int _seen;

    public TimeSpan Interval { get; } = interval;

    private int TimersCreated => Volatile.Read(ref _timersCreated);

    public override DateTimeOffset GetUtcNow() => _fake.GetUtcNow();

    public override long GetTimestamp() => _fake.GetTimestamp();

    public override long TimestampFrequency => _fake.TimestampFrequency;

    public override TimeZoneInfo LocalTimeZone => _fake.LocalTimeZone;

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = _fake.CreateTimer(callback, state, dueTime, period);
        Interlocked.Increment(ref _timersCreated);
        return timer;
    }

    /// <summary>Runs one renewal round: the loop's delay elapses and the loop comes back to wait for the next one.</summary>
    public async Task TickAsync()
    {
        await StartRoundAsync();
        await Wait.UntilAsync(() => TimersCreated > _seen, "the renewal round ended");
    }

    /// <summary>Starts one renewal round without waiting for it to end (for a round the broker does not answer).</summary>
    public async Task StartRoundAsync()
    {
        await Wait.UntilAsync(() => TimersCreated > _seen, "the renewal loop waits for its next round");
        _seen = TimersCreated;
        _fake.Advance(Interval);
    }

    public async Task TickAsync(int rounds)
    {
        for (var i = 0; i < rounds; i++)
        {
            await TickAsync();
        }
    }
}
