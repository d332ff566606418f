using System.Collections.Concurrent;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.RabbitMQ;

namespace Messaging.ConformanceTests.RabbitMq;

/// <summary>
/// The consumer's acknowledgement batching, against a model of the broker's rules for a channel's unacknowledged
/// deliveries: <c>basic.ack(tag, multiple)</c> must name a tag that is still unacknowledged, or the broker closes the
/// channel ("unknown delivery tag"), and with <c>multiple</c> it settles every unacknowledged tag up to it.
/// </summary>
public sealed class RabbitMqAckBatcherTests
{
    private static readonly TimeSpan Never = TimeSpan.FromHours(1);

    private sealed class BrokerModel
    {
        private readonly SortedSet<ulong> _unacked = [];
        public ConcurrentQueue<(ulong Tag, bool Multiple)> Frames { get; } = new();
        public ConcurrentQueue<string> Violations { get; } = new();

        public void Deliver(ulong tag)
        {
            lock (_unacked)
            {
                _unacked.Add(tag);
            }
        }

        public ValueTask Ack(ulong tag, bool multiple)
        {
            Frames.Enqueue((tag, multiple));
            lock (_unacked)
            {
                if (!_unacked.Contains(tag))
                {
                    Violations.Enqueue($"ack of unknown delivery tag {tag} (multiple: {multiple})");
                }
                else if (multiple)
                {
                    _unacked.RemoveWhere(t => t <= tag);
                }
                else
                {
                    _unacked.Remove(tag);
                }
            }
            return ValueTask.CompletedTask;
        }

        public void Nack(ulong tag)
        {
            lock (_unacked)
            {
                if (!_unacked.Remove(tag))
                {
                    Violations.Enqueue($"nack of unknown delivery tag {tag}");
                }
            }
        }

        public ulong[] Unacked()
        {
            lock (_unacked)
            {
                return [.. _unacked];
            }
        }
    }

    private static (RabbitMqAckBatcher Batcher, BrokerModel Broker, RabbitMqAckBatcher.Slot[] Slots) Start(int deliveries, int threshold, TimeSpan linger, Func<ulong, bool, ValueTask>? ack = null)
    {
        var broker = new BrokerModel();
        var batcher = new RabbitMqAckBatcher(ack ?? broker.Ack, ex => broker.Violations.Enqueue("send failed: " + ex.Message), threshold, linger);
        var slots = new RabbitMqAckBatcher.Slot[deliveries + 1];
        for (var tag = 1UL; tag <= (ulong)deliveries; tag++)
        {
            broker.Deliver(tag);
            slots[tag] = batcher.Track(tag);
        }
        return (batcher, broker, slots);
    }

    [Fact]
    public async Task Completions_that_pile_up_during_a_send_go_out_as_one_multiple_ack()
    {
        var broker = new BrokerModel();
        var firstSend = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var (batcher, _, slots) = Start(100, threshold: 1000, Never, async (tag, multiple) =>
        {
            await broker.Ack(tag, multiple);
            if (firstSend.TrySetResult())
            {
                await release.Task;
            }
        });
        for (var tag = 1UL; tag <= 100; tag++)
        {
            broker.Deliver(tag);
        }
        await using var _ = batcher;

        batcher.Ack(slots[1]);
        await firstSend.Task.WaitAsync(Wait.DefaultTimeout, TestContext.Current.CancellationToken);
        for (var i = 2; i <= 100; i++)
        {
            batcher.Ack(slots[i]);
        }
        release.SetResult();
        await Wait.UntilAsync(() => broker.Unacked().Length == 0, "every delivery is acknowledged");

        Assert.Empty(broker.Violations);
        Assert.Equal([(1UL, true), (100UL, true)], broker.Frames.ToArray());
        Assert.Equal(0, batcher.Outstanding);
    }

    [Fact]
    public async Task Deliveries_completed_behind_a_running_one_wait_for_it_and_then_go_out_together()
    {
        var (batcher, broker, slots) = Start(5, threshold: 10, Never);
        await using var _ = batcher;

        batcher.Ack(slots[2]);
        batcher.Ack(slots[3]);
        batcher.Ack(slots[1]);
        await Wait.UntilAsync(() => broker.Unacked().Length == 2, "deliveries 1 to 3 are acknowledged");

        Assert.Empty(broker.Violations);
        Assert.Equal([4UL, 5UL], broker.Unacked());
        Assert.Equal([(3UL, true)], broker.Frames.ToArray());
    }

    [Fact]
    public async Task Enough_completions_behind_a_stuck_delivery_are_acknowledged_one_by_one_so_prefetch_credit_comes_back()
    {
        var (batcher, broker, slots) = Start(5, threshold: 2, Never);
        await using var _ = batcher;

        batcher.Ack(slots[2]);
        batcher.Ack(slots[3]);
        await Wait.UntilAsync(() => broker.Unacked().Length == 3, "deliveries 2 and 3 are acknowledged");
        Assert.Equal([1UL, 4UL, 5UL], broker.Unacked());

        // The stuck one finishes; the multiple-ack may not name 2 or 3 again.
        batcher.Ack(slots[1]);
        batcher.Ack(slots[4]);
        await Wait.UntilAsync(() => broker.Unacked().Length == 1, "deliveries 1 and 4 are acknowledged");

        Assert.Empty(broker.Violations);
        Assert.Equal([5UL], broker.Unacked());
        Assert.DoesNotContain(broker.Frames, f => f.Multiple && f.Tag is 2 or 3);
    }

    [Fact]
    public async Task Completions_behind_a_stuck_delivery_are_acknowledged_after_the_linger()
    {
        var (batcher, broker, slots) = Start(2, threshold: 100, TimeSpan.FromMilliseconds(50));
        await using var _ = batcher;

        batcher.Ack(slots[2]);
        await Wait.UntilAsync(() => broker.Unacked().Length == 1, "delivery 2 is acknowledged once it has waited");

        Assert.Empty(broker.Violations);
        Assert.Equal([1UL], broker.Unacked());
        Assert.Equal([(2UL, false)], broker.Frames.ToArray());
    }

    [Fact]
    public async Task A_delivery_returned_with_its_own_nack_is_never_named_by_an_ack()
    {
        var (batcher, broker, slots) = Start(4, threshold: 10, Never);
        await using var _ = batcher;

        batcher.Ack(slots[1]);
        batcher.Ack(slots[3]);
        broker.Nack(2);
        batcher.SettledElsewhere(slots[2]);
        batcher.Ack(slots[4]);
        await Wait.UntilAsync(() => broker.Unacked().Length == 0, "every delivery is settled");

        Assert.Empty(broker.Violations);
        Assert.DoesNotContain(broker.Frames, f => f.Tag == 2);
        Assert.Equal(0, batcher.Outstanding);
    }

    [Fact]
    public async Task Flush_acknowledges_everything_requested_even_behind_an_unsettled_delivery()
    {
        var (batcher, broker, slots) = Start(3, threshold: 100, Never);
        await using var _ = batcher;

        batcher.Ack(slots[2]);
        batcher.Ack(slots[3]);
        await batcher.FlushAsync();

        Assert.Empty(broker.Violations);
        Assert.Equal([1UL], broker.Unacked());
        Assert.Equal([(2UL, false), (3UL, false)], broker.Frames.ToArray());
    }

    [Fact]
    public async Task Behind_a_stuck_delivery_tracking_keeps_only_unsettled_deliveries()
    {
        var (batcher, broker, slots) = Start(1001, threshold: 10, TimeSpan.FromMilliseconds(50));
        await using var _ = batcher;

        for (var i = 2; i <= 1001; i++)
        {
            batcher.Ack(slots[i]);
        }
        await Wait.UntilAsync(() => broker.Unacked().Length == 1, "everything behind the stuck delivery is acknowledged");
        Assert.Equal(1, batcher.Outstanding);

        batcher.Ack(slots[1]);
        await Wait.UntilAsync(() => broker.Unacked().Length == 0, "the stuck delivery is acknowledged");
        Assert.Empty(broker.Violations);
        Assert.Equal((1UL, true), broker.Frames.Last());
        Assert.Equal(0, batcher.Outstanding);
    }

    [Fact]
    public async Task Tracking_grows_past_its_initial_capacity_and_keeps_delivery_order()
    {
        var (batcher, broker, slots) = Start(300, threshold: 1000, Never);
        await using var _ = batcher;

        for (var i = 300; i >= 2; i--)
        {
            batcher.Ack(slots[i]);
        }
        Assert.Equal(300, broker.Unacked().Length);
        batcher.Ack(slots[1]);
        await Wait.UntilAsync(() => broker.Unacked().Length == 0, "every delivery is acknowledged");

        Assert.Empty(broker.Violations);
        Assert.Equal((300UL, true), broker.Frames.Last());
        Assert.Equal(0, batcher.Outstanding);
    }

    [Fact]
    public async Task A_failed_send_is_reported_and_later_acknowledgements_still_go_out_even_if_reporting_throws()
    {
        var broker = new BrokerModel();
        var failures = new ConcurrentQueue<Exception>();
        var fail = 1;
        var batcher = new RabbitMqAckBatcher((tag, multiple) =>
        {
            if (Interlocked.Exchange(ref fail, 0) == 1)
            {
                throw new IOException("connection reset");
            }
            return broker.Ack(tag, multiple);
        }, ex =>
        {
            failures.Enqueue(ex);
            throw new InvalidOperationException("a logging provider failed");
        }, 10, Never);
        await using var _ = batcher;
        broker.Deliver(1);
        broker.Deliver(2);
        var first = batcher.Track(1);
        var second = batcher.Track(2);

        batcher.Ack(first);
        await Wait.UntilAsync(() => !failures.IsEmpty, "the failed send is reported");
        batcher.Ack(second);
        await Wait.UntilAsync(() => broker.Unacked().Length == 0, "the later acknowledgement covers both");

        Assert.IsType<IOException>(Assert.Single(failures));
        Assert.Empty(broker.Violations);
    }
}
