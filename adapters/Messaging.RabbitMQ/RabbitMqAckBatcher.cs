namespace Messaging.RabbitMQ;

/// <summary>
/// Acknowledges a consumer channel's deliveries in batches. Deliveries are tracked in the order the broker sent them;
/// when every delivery up to tag T is settled, one <c>basic.ack</c> with <c>multiple</c> set acknowledges them all.
/// On a quorum queue every acknowledgement frame is a settle command in the queue's Raft log, so one frame for many
/// deliveries saves the broker far more than it saves this process.
/// </summary>
/// <remarks>
/// <para>Batching is group commit, not a timer: a completion schedules one flush on the thread pool, and whatever has
/// completed by the time it runs goes out together. At low rates that is one delivery per frame and no added
/// latency; under load, batches grow by themselves.</para>
/// <para>A slow delivery holds back the multiple-ack of everything behind it. So that it never holds back the broker's
/// prefetch credit or leaves handled deliveries unacknowledged for long, deliveries completed behind an unsettled one
/// are acknowledged one by one once there are <c>individualThreshold</c> of them, or once they have waited
/// <c>linger</c>; tracking then keeps only the unsettled ones, so it stays as small as the prefetch window.</para>
/// <para>The broker refuses an acknowledgement that names a tag it no longer holds, so a multiple-ack only ever names
/// a delivery that has not been acknowledged yet, and a delivery returned with its own nack is recorded
/// (<see cref="SettledElsewhere"/>) only after that frame was written.</para>
/// <para>Tags are the client's: after a connection recovery the client keeps them increasing and drops
/// acknowledgements of tags from the lost channel, so tracking carries on unchanged.</para>
/// </remarks>
internal sealed class RabbitMqAckBatcher : IAsyncDisposable
{
    private readonly Func<ulong, bool, ValueTask> _ack;
    private readonly Action<Exception> _onSendFailed;
    private readonly int _individualThreshold;
    private readonly TimeSpan _linger;
    private readonly Lock _gate = new();
    private readonly Timer _lingerTimer;
    private readonly Func<Task> _flushLoop;
    private readonly List<ulong> _individual = [];
    private Slot[] _ring = new Slot[64];
    private int _head;
    private int _count;
    private int _requested;
    private bool _flushScheduled;
    private bool _forceIndividual;
    private bool _lingerArmed;
    private bool _disposed;
    private Task _flush = Task.CompletedTask;

    /// <param name="ack">Sends <c>basic.ack(tag, multiple)</c>.</param>
    /// <param name="onSendFailed">Called when sending fails (a closed channel, typically); the deliveries return to the queue with the channel.</param>
    /// <param name="individualThreshold">Completed deliveries waiting behind an unsettled one that are acknowledged one by one.</param>
    /// <param name="linger">How long completed deliveries wait behind an unsettled one before they are acknowledged one by one.</param>
    public RabbitMqAckBatcher(Func<ulong, bool, ValueTask> ack, Action<Exception> onSendFailed, int individualThreshold, TimeSpan linger)
    {
        _ack = ack;
        _onSendFailed = onSendFailed;
        _individualThreshold = Math.Max(1, individualThreshold);
        _linger = linger;
        _flushLoop = FlushLoopAsync;
        _lingerTimer = new Timer(static state => ((RabbitMqAckBatcher)state!).OnLinger(), this, Timeout.Infinite, Timeout.Infinite);
    }

    /// <summary>One delivery's place in the channel's order.</summary>
    internal sealed class Slot(ulong tag)
    {
        internal const byte Pending = 0;
        internal const byte AckRequested = 1;
        internal const byte SettledOnWire = 2;

        internal ulong Tag { get; } = tag;

        internal byte State { get; set; }
    }

    /// <summary>Deliveries still tracked: the oldest unsettled one and what is not yet acknowledged after it (for tests).</summary>
    internal int Outstanding
    {
        get
        {
            lock (_gate)
            {
                return _count;
            }
        }
    }

    /// <summary>Starts tracking a delivery. Called in the order the broker delivers, before anything settles it.</summary>
    public Slot Track(ulong deliveryTag)
    {
        var slot = new Slot(deliveryTag);
        lock (_gate)
        {
            if (_count == _ring.Length)
            {
                Resize(_ring.Length * 2);
            }
            _ring[(_head + _count) & (_ring.Length - 1)] = slot;
            _count++;
        }
        return slot;
    }

    /// <summary>Asks for the delivery to be acknowledged; the frame goes out with the next flush.</summary>
    public void Ack(Slot slot)
    {
        lock (_gate)
        {
            if (slot.State != Slot.Pending)
            {
                return;
            }
            slot.State = Slot.AckRequested;
            _requested++;
            ScheduleFlushLocked();
        }
    }

    /// <summary>
    /// Records that the delivery was settled by a frame of its own (a nack or reject) that the client has already
    /// written, so later multiple-acks may pass over it.
    /// </summary>
    public void SettledElsewhere(Slot slot)
    {
        lock (_gate)
        {
            if (slot.State == Slot.AckRequested)
            {
                _requested--;
            }
            slot.State = Slot.SettledOnWire;
            ScheduleFlushLocked();
        }
    }

    /// <summary>Sends every requested acknowledgement, one by one where a multiple-ack cannot cover it, and waits for the sends.</summary>
    public async Task FlushAsync()
    {
        while (true)
        {
            Task flush;
            lock (_gate)
            {
                if (!_flushScheduled && _requested == 0)
                {
                    return;
                }
                _forceIndividual = true;
                ScheduleFlushLocked();
                flush = _flush;
            }
            await flush.ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        lock (_gate)
        {
            _disposed = true;
        }
        await _lingerTimer.DisposeAsync().ConfigureAwait(false);
    }

    private void ScheduleFlushLocked()
    {
        if (_flushScheduled)
        {
            return;
        }
        _flushScheduled = true;
        // The loop belongs to the channel, not to whichever handler completed first: it does not inherit its context.
        using (ExecutionContext.SuppressFlow())
        {
            _flush = Task.Run(_flushLoop);
        }
    }

    private void OnLinger()
    {
        lock (_gate)
        {
            _lingerArmed = false;
            if (_requested == 0)
            {
                return;
            }
            _forceIndividual = true;
            ScheduleFlushLocked();
        }
    }

    private async Task FlushLoopAsync()
    {
        while (true)
        {
            ulong multipleUpTo = 0;
            _individual.Clear();
            lock (_gate)
            {
                // The settled prefix goes in one frame, naming its highest tag that was never acknowledged.
                while (_count > 0 && _ring[_head].State != Slot.Pending)
                {
                    var slot = _ring[_head];
                    if (slot.State == Slot.AckRequested)
                    {
                        multipleUpTo = Math.Max(multipleUpTo, slot.Tag);
                        slot.State = Slot.SettledOnWire;
                        _requested--;
                    }
                    _ring[_head] = null!;
                    _head = (_head + 1) & (_ring.Length - 1);
                    _count--;
                }
                // Whatever is still requested waits behind an unsettled delivery.
                if (_requested > 0 && (_forceIndividual || _requested >= _individualThreshold))
                {
                    TakeIndividualLocked();
                }
                _forceIndividual = false;
                if (multipleUpTo == 0 && _individual.Count == 0)
                {
                    _flushScheduled = false;
                    if (_requested > 0 && !_lingerArmed && !_disposed)
                    {
                        _lingerArmed = true;
                        _lingerTimer.Change(_linger, Timeout.InfiniteTimeSpan);
                    }
                    return;
                }
            }
            try
            {
                if (multipleUpTo != 0)
                {
                    await _ack(multipleUpTo, true).ConfigureAwait(false);
                }
                foreach (var tag in _individual)
                {
                    await _ack(tag, false).ConfigureAwait(false);
                }
            }
            catch (Exception ex)
            {
                ReportQuietly(ex);
            }
        }
    }

    /// <summary>Moves every requested acknowledgement to the one-by-one list and keeps only unsettled deliveries tracked.</summary>
    private void TakeIndividualLocked()
    {
        var kept = 0;
        var mask = _ring.Length - 1;
        for (var i = 0; i < _count; i++)
        {
            var slot = _ring[(_head + i) & mask];
            if (slot.State == Slot.AckRequested)
            {
                _individual.Add(slot.Tag);
                slot.State = Slot.SettledOnWire;
            }
            if (slot.State == Slot.Pending)
            {
                _ring[(_head + kept) & mask] = slot;
                kept++;
            }
        }
        for (var i = kept; i < _count; i++)
        {
            _ring[(_head + i) & mask] = null!;
        }
        _count = kept;
        _requested = 0;
    }

    private void ReportQuietly(Exception ex)
    {
        try
        {
            _onSendFailed(ex);
        }
        catch (Exception)
        {
            // Reporting must never stop the loop: acknowledgements still waiting would never be sent.
        }
    }

    private void Resize(int capacity)
    {
        var ring = new Slot[capacity];
        for (var i = 0; i < _count; i++)
        {
            ring[i] = _ring[(_head + i) & (_ring.Length - 1)];
        }
        _ring = ring;
        _head = 0;
    }
}
