using Messaging.Publishing;
using Microsoft.Extensions.Time.Testing;

namespace Messaging.Tests.Publishing;

/// <summary>The shared publish deadlines: never earlier than the timeout, at most a slice later, one timer per slice.</summary>
public sealed class PublishDeadlinesTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(8); // slices of 50 ms (8 s / 16 = 500 ms, capped)
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.Zero));

    [Fact]
    public void A_deadline_fires_no_earlier_than_the_timeout_and_at_most_one_slice_after_it()
    {
        var deadlines = new PublishDeadlines(Timeout, _time);
        _time.Advance(TimeSpan.FromMilliseconds(10)); // somewhere inside a slice
        var timer = deadlines.Current();

        _time.Advance(Timeout - TimeSpan.FromMilliseconds(1));
        Assert.False(timer.IsCancellationRequested);

        _time.Advance(TimeSpan.FromMilliseconds(51));
        Assert.True(timer.IsCancellationRequested);
    }

    [Fact]
    public void Publishes_in_one_slice_share_a_timer_and_the_next_slice_gets_its_own()
    {
        var deadlines = new PublishDeadlines(Timeout, _time);
        var first = deadlines.Current();
        _time.Advance(TimeSpan.FromMilliseconds(20));
        Assert.Same(first, deadlines.Current());

        _time.Advance(TimeSpan.FromMilliseconds(50));
        var next = deadlines.Current();
        Assert.NotSame(first, next);
        Assert.False(next.IsCancellationRequested);
    }

    [Fact]
    public void A_short_timeout_has_short_slices()
    {
        var deadlines = new PublishDeadlines(TimeSpan.FromMilliseconds(160), _time); // slices of 10 ms
        var timer = deadlines.Current();
        _time.Advance(TimeSpan.FromMilliseconds(159));
        Assert.False(timer.IsCancellationRequested);
        _time.Advance(TimeSpan.FromMilliseconds(11));
        Assert.True(timer.IsCancellationRequested);
    }
}
