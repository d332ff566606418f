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
/// <c>linger</c>.</para>
/// <para>Tags are the client's: after a connection recovery the client keeps them increasing and drops
/// acknowledgements of tags from the lost channel, so tracking carries on unchanged.</para>
/// </remarks>
internal sealed class RabbitMqAckBatcher : IAsyncDisposable
{
    private const byte Pending = 0;
    private const byte AckRequested = 1;
    private const byte SettledOnWire = 2;

    private readonly Func<ulong, bool, ValueTask> _ack;
    private readonly Action<Exception> _onSendFailed;
    private readonly int _individualThreshold;
    private readonly TimeSpan _linger;
    private readonly Lock _gate = new();
    private readonly Timer _lingerTimer;
    private ulong[] _tags = new ulong[64];
    private byte[] _states = new byte[64];
    private int _head;
    private int _count;
    private long _headSequence;
    private int _requestedBehindHead;
    private bool _flushScheduled;
    private bool _forceIndividual;
    private bool _lingerArmed;
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
        _lingerTimer = new Timer(static state => ((RabbitMqAckBatcher)state!).OnLinger(), this, Timeout.Infinite, Timeout.Infinite);
    }

    /// <summary>Deliveries still tracked: the oldest unsettled one and everything delivered after it (for tests).</summary>
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
    public long Track(ulong deliveryTag)
    {
        lock (_gate)
        {
            if (_count == _tags.Length)
            {
                Grow();
            }
            var index = (_head + _count) % _tags.Length;
            _tags[index] = deliveryTag;
            _states[index] = Pending;
            _count++;
            return _headSequence + _count - 1;
        }
    }

    /// <summary>Asks for the delivery to be acknowledged; the frame goes out with the next flush.</summary>
    public void Ack(long sequence)
    {
        lock (_gate)
        {
            var index = IndexOf(sequence);
            if (index < 0 || _states[index] != Pending)
            {
                return;
            }
            _states[index] = AckRequested;
            ScheduleFlushLocked();
        }
    }

    /// <summary>
    /// Records that the delivery was settled by a frame of its own (a nack or reject) that the client has already
    /// written, so later multiple-acks may pass over it.
    /// </summary>
    public void SettledElsewhere(long sequence)
    {
        lock (_gate)
        {
            var index = IndexOf(sequence);
            if (index < 0)
            {
                return;
            }
            _states[index] = SettledOnWire;
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
                if (!_flushScheduled)
                {
                    if (!HasRequestsLocked())
                    {
                        return;
                    }
                    _forceIndividual = true;
                    ScheduleFlushLocked();
                }
                else
                {
                    _forceIndividual = true;
                }
                flush = _flush;
            }
            await flush.ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _lingerTimer.DisposeAsync().ConfigureAwait(false);
    }

    private bool HasRequestsLocked()
    {
        for (var i = 0; i < _count; i++)
        {
            if (_states[(_head + i) % _states.Length] == AckRequested)
            {
                return true;
            }
        }
        return false;
    }

    private void ScheduleFlushLocked()
    {
        if (_flushScheduled)
        {
            return;
        }
        _flushScheduled = true;
        _flush = Task.Run(FlushLoopAsync);
    }

    private void OnLinger()
    {
        lock (_gate)
        {
            _lingerArmed = false;
            if (_requestedBehindHead == 0)
            {
                return;
            }
            _forceIndividual = true;
            ScheduleFlushLocked();
        }
    }

    private async Task FlushLoopAsync()
    {
        List<ulong>? individual = null;
        while (true)
        {
            ulong multipleUpTo = 0;
            individual?.Clear();
            lock (_gate)
            {
                // The settled prefix goes in one frame.
                while (_count > 0 && _states[_head] != Pending)
                {
                    if (_states[_head] == AckRequested)
                    {
                        multipleUpTo = _tags[_head];
                    }
                    _head = (_head + 1) % _tags.Length;
                    _count--;
                    _headSequence++;
                }
                _requestedBehindHead = CountRequestedLocked();
                if (_requestedBehindHead > 0 && (_forceIndividual || _requestedBehindHead >= _individualThreshold))
                {
                    individual ??= [];
                    for (var i = 0; i < _count; i++)
                    {
                        var index = (_head + i) % _tags.Length;
                        if (_states[index] == AckRequested)
                        {
                            individual.Add(_tags[index]);
                            _states[index] = SettledOnWire;
                        }
                    }
                    _requestedBehindHead = 0;
                }
                _forceIndividual = false;
                if (multipleUpTo == 0 && (individual is null || individual.Count == 0))
                {
                    _flushScheduled = false;
                    if (_requestedBehindHead > 0 && !_lingerArmed)
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
                if (individual is not null)
                {
                    foreach (var tag in individual)
                    {
                        await _ack(tag, false).ConfigureAwait(false);
                    }
                }
            }
            catch (Exception ex)
            {
                _onSendFailed(ex);
            }
        }
    }

    private int CountRequestedLocked()
    {
        var requested = 0;
        for (var i = 0; i < _count; i++)
        {
            if (_states[(_head + i) % _states.Length] == AckRequested)
            {
                requested++;
            }
        }
        return requested;
    }

    private int IndexOf(long sequence)
    {
        var offset = sequence - _headSequence;
        if (offset < 0 || offset >= _count)
        {
            return -1; // already acknowledged by a frame of its own and passed over
        }
        return (int)((_head + offset) % _tags.Length);
    }

    private void Grow()
    {
        var tags = new ulong[_tags.Length * 2];
        var states = new byte[_states.Length * 2];
        for (var i = 0; i < _count; i++)
        {
            var index = (_head + i) % _tags.Length;
            tags[i] = _tags[index];
            states[i] = _states[index];
        }
        _tags = tags;
        _states = states;
        _head = 0;
    }
}
