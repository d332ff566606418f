using Messaging.Diagnostics;
using Messaging.Topology;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Messaging.Transport;

/// <summary>
/// What happens to a received message between the broker and its handler, written once for every transport:
/// <list type="bullet">
/// <item>decoding, where any exception makes the message an invalid one (dead-lettered, never handled);</item>
/// <item>at most <see cref="SubscriptionDefinition.Concurrency"/> handlers at once, and at most
/// <c>Concurrency + Prefetch</c> messages held (<see cref="ReserveAsync"/> for transports that pull);</item>
/// <item>ordering-key lanes on ordered subscriptions: one message of a key at a time, in arrival order;</item>
/// <item>each message settled exactly once; a settlement that throws, or a handler path that settles nothing, gives the
/// message back to the broker, with a log line;</item>
/// <item>lease renewal of every held message, waiting or running, until it is settled; a lost lease cancels its handler;</item>
/// <item>graceful stop that drains without polling, and abort, which gives back everything unsettled.</item>
/// </list>
/// A transport supplies only an <see cref="ITransportReceiver"/> (its broker's receive loop) and a
/// <see cref="ReceivedMessage"/> per message (wire mapping and settlement primitives).
/// </summary>
public sealed partial class ReceivePipeline : ITransportConsumer
{
    private static readonly TimeSpan ReturnTimeout = TimeSpan.FromSeconds(10);
    private readonly DeliveryCallback _onDelivery;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly KeyValuePair<string, object?>[] _metricTags;
    private readonly int _concurrency;
    private readonly SemaphoreSlim _places;
    private readonly Lock _lock = new();
    private readonly Queue<ReceivedMessage> _ready = new();
    private readonly Dictionary<string, Queue<ReceivedMessage>?>? _lanes;
    // Keyed by arrival sequence: hashing a long is cheap, an object's identity hash is not (measured: 3.6% of the in-memory
    // harness's CPU went to assigning identity hash codes).
    private readonly Dictionary<long, ReceivedMessage> _held = [];
    private readonly CancellationTokenSource _abort = new();
    private readonly CancellationTokenSource _stopRenewal = new();
    private readonly CancellationTokenSource _stopRequested = new();
    private long _sequence;
    private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private TaskCompletionSource _renewalRound = CompletedRound();
    private ITransportReceiver? _receiver;
    private Task _renewalLoop = Task.CompletedTask;
    private Task? _aborting;
    private int _running;
    private int _outstanding = 1; // one reference held by the pipeline itself until a stop begins
    private int _selfReleased;
    private volatile bool _stopping;
    private int _disposed;
    private readonly Lock _healthLock = new();
    private readonly Dictionary<string, (string Reason, DateTimeOffset Since)> _receiveFailures = new(StringComparer.Ordinal);
    private volatile bool _receiveFailing;
    private DateTimeOffset? _startedAt;
    private DateTimeOffset? _stoppedAt;

    internal ReceivePipeline(SubscriptionDefinition subscription, DeliveryCallback onDelivery, ILogger? logger, TimeProvider? time, string transportName)
    {
        ArgumentNullException.ThrowIfNull(subscription);
        Subscription = subscription;
        _onDelivery = onDelivery;
        _logger = logger ?? NullLogger.Instance;
        _time = time ?? TimeProvider.System;
        _concurrency = Math.Max(1, subscription.Concurrency);
        Capacity = _concurrency + Math.Max(0, subscription.Prefetch);
        _places = new SemaphoreSlim(Capacity, Capacity);
        _lanes = subscription.Ordered ? new Dictionary<string, Queue<ReceivedMessage>?>(StringComparer.Ordinal) : null;
        _metricTags =
        [
            new("messaging.system", transportName),
            new("messaging.destination.name", subscription.Topic),
            new("messaging.destination.subscription.name", subscription.Name),
        ];
    }

    /// <summary>The subscription this pipeline handles.</summary>
    public SubscriptionDefinition Subscription { get; }

    /// <summary>Most messages held at once (<c>Concurrency + Prefetch</c>): the flow-control window to ask the broker for.</summary>
    public int Capacity { get; }

    /// <summary>The clock of <see cref="ReceivedMessage.ReceivedAt"/> and <see cref="ReceivedMessage.LeasedAt"/>, for receivers to use too.</summary>
    public TimeProvider Time => _time;

    /// <summary>True once a stop or an abort began; receive loops end.</summary>
    public bool IsStopping => _stopping;

    /// <summary>Fires when the pipeline starts to stop, gracefully or not.</summary>
    internal CancellationToken StopRequested => _stopRequested.Token;

    /// <summary>Messages received and not yet settled (waiting or running).</summary>
    internal int HeldCount
    {
        get
        {
            lock (_lock)
            {
                return _held.Count;
            }
        }
    }

    internal async Task StartAsync(IMessageTransport transport, CancellationToken cancellationToken)
    {
        _receiver = await transport.StartReceiverAsync(this, cancellationToken).ConfigureAwait(false);
        lock (_healthLock)
        {
            _startedAt ??= _time.GetUtcNow();
        }
        if (_receiver.LeaseRenewalInterval is { } interval && interval > TimeSpan.Zero)
        {
            _renewalLoop = Task.Run(() => RenewLoopAsync(interval), CancellationToken.None);
        }
    }

    // ---- health --------------------------------------------------------------------------------

    /// <summary>
    /// For receivers: receiving from <paramref name="source"/> (a queue, an entity, a stream; null when the receiver has only
    /// one) fails, for <paramref name="reason"/> (the last error). The consumers health check reports the subscription
    /// degraded, and unhealthy once the failure has lasted its grace period. Call it on every failure: the reason is updated,
    /// the time it started is kept until <see cref="ReportReceiveRecovered"/>.
    /// </summary>
    public void ReportReceiveFailing(string reason, string? source = null)
    {
        ArgumentNullException.ThrowIfNull(reason);
        var key = source ?? string.Empty;
        lock (_healthLock)
        {
            var since = _receiveFailures.TryGetValue(key, out var existing) ? existing.Since : _time.GetUtcNow();
            _receiveFailures[key] = (reason, since);
            _receiveFailing = true;
        }
    }

    /// <summary>For receivers: receiving from <paramref name="source"/> works again (see <see cref="ReportReceiveFailing"/>). Cheap when nothing failed.</summary>
    public void ReportReceiveRecovered(string? source = null)
    {
        if (!_receiveFailing)
        {
            return;
        }
        lock (_healthLock)
        {
            _receiveFailures.Remove(source ?? string.Empty);
            _receiveFailing = _receiveFailures.Count > 0;
        }
    }

    /// <summary>Whether the consumer runs and receives, for the consumers health check.</summary>
    internal ConsumerHealth GetHealth()
    {
        lock (_healthLock)
        {
            if (_stoppedAt is { } stopped)
            {
                return new ConsumerHealth(Subscription.Name, ConsumerState.Stopped, stopped, null, null);
            }
            if (_startedAt is not { } started)
            {
                return new ConsumerHealth(Subscription.Name, ConsumerState.NotStarted, null, null, null);
            }
            if (_receiveFailures.Count == 0)
            {
                return new ConsumerHealth(Subscription.Name, ConsumerState.Running, started, null, null);
            }
            var failures = _receiveFailures.OrderBy(f => f.Value.Since).ToList();
            var reason = string.Join("; ", failures.Select(f => f.Key.Length == 0 ? f.Value.Reason : $"{f.Key}: {f.Value.Reason}"));
            return new ConsumerHealth(Subscription.Name, ConsumerState.Running, started, reason, failures[0].Value.Since);
        }
    }

    private void MarkStopping()
    {
        _stopping = true;
        if (!_stopRequested.IsCancellationRequested)
        {
            // May run under the pipeline's lock: the token's callbacks (a held retry's backoff) run elsewhere.
            _ = _stopRequested.CancelAsync();
        }
        lock (_healthLock)
        {
            _stoppedAt ??= _time.GetUtcNow();
        }
    }

    // ---- flow control --------------------------------------------------------------------------

    /// <summary>
    /// For transports that pull: waits until at least one place is free and reserves up to <paramref name="max"/> places,
    /// returning how many. Submit each received message with <c>reserved: true</c> and give back the places not used with
    /// <see cref="CancelReservation"/>.
    /// Once the pipeline stops or aborts it reserves nothing and throws <see cref="OperationCanceledException"/>: a receive
    /// loop still running then would only take messages to give them straight back, and every such return counts against
    /// the broker's delivery limit.
    /// </summary>
    public async ValueTask<int> ReserveAsync(int max, CancellationToken cancellationToken)
    {
        ThrowIfStopping(cancellationToken);
        await _places.WaitAsync(cancellationToken).ConfigureAwait(false);
        if (_stopping)
        {
            _places.Release();
            ThrowIfStopping(cancellationToken);
        }
        var reserved = 1;
        while (reserved < max && _places.Wait(0))
        {
            reserved++;
        }
        return reserved;
    }

    /// <summary>
    /// Reports the leases of every held message that <paramref name="lost"/> selects as lost (see
    /// <see cref="ReceivedMessage.ReportLeaseLost"/>), for a transport whose leases end together: the channel or connection
    /// they came on closed. Running handlers are cancelled; the broker delivers those messages again. Returns how many.
    /// </summary>
    public int ReportLeasesLost(Func<ReceivedMessage, bool> lost, string reason)
    {
        ArgumentNullException.ThrowIfNull(lost);
        List<ReceivedMessage> affected;
        lock (_lock)
        {
            affected = _held.Values.Where(m => m.IsHeld && lost(m)).ToList();
        }
        foreach (var message in affected)
        {
            message.ReportLeaseLost(reason);
        }
        return affected.Count;
    }

    private void ThrowIfStopping(CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (_stopping)
        {
            throw new OperationCanceledException($"Subscription {Subscription.Name} is stopping; nothing more is received.");
        }
    }

    /// <summary>
    /// Lowers how many messages this pipeline holds at once below <see cref="Capacity"/>, for a transport that must not hold
    /// many (say, because a held message's lock costs a delivery when it is given back). Call it before receiving.
    /// </summary>
    public void LimitHeldMessages(int max)
    {
        var remove = Capacity - Math.Clamp(max, 1, Capacity);
        while (remove > 0 && _places.Wait(0))
        {
            remove--;
        }
    }

    /// <summary>Gives back places reserved with <see cref="ReserveAsync"/> that no message took.</summary>
    public void CancelReservation(int count)
    {
        if (count > 0)
        {
            _places.Release(count);
        }
    }

    // ---- receiving -----------------------------------------------------------------------------

    /// <summary>
    /// Hands a received message to the pipeline. It never blocks: the message starts at once when a handler slot is free
    /// (on the caller's thread, until the handler first waits), or waits in the pipeline for one.
    /// </summary>
    public void Submit(ReceivedMessage message, bool reserved = false)
    {
        ArgumentNullException.ThrowIfNull(message);
        SubmitCore(new ReadOnlySpan<ReceivedMessage>(ref message), reserved);
    }

    /// <summary>
    /// Hands the messages of one receive to the pipeline, in the order received. Every one takes its place (its key's lane
    /// included) before any starts, so a broker that hands out several messages of a key at once (an SQS FIFO group) never
    /// sees a later one start because an earlier one finished, or was retried, before the later one was handed over.
    /// Never blocks, as <see cref="Submit"/>.
    /// </summary>
    public void SubmitAll(IReadOnlyList<ReceivedMessage> messages, bool reserved = false)
    {
        ArgumentNullException.ThrowIfNull(messages);
        SubmitCore(messages switch
        {
            ReceivedMessage[] array => array,
            List<ReceivedMessage> list => System.Runtime.InteropServices.CollectionsMarshal.AsSpan(list),
            _ => messages.ToArray(),
        }, reserved);
    }

    private const byte Waits = 0;
    private const byte Starts = 1;
    private const byte Rejected = 2;

    private void SubmitCore(ReadOnlySpan<ReceivedMessage> messages, bool reserved)
    {
        var now = _time.GetUtcNow();
        foreach (var message in messages)
        {
            message.Initialize(this, now);
            message.HoldsPlace = reserved || _places.Wait(0);
        }
        // What becomes of each, decided under the lock and carried out after it (no allocation for one message).
        Span<byte> fate = messages.Length <= 256 ? stackalloc byte[messages.Length] : new byte[messages.Length];
        Task? aborting;
        lock (_lock)
        {
            aborting = _aborting;
            for (var i = 0; i < messages.Length; i++)
            {
                var message = messages[i];
                _outstanding++;
                message.Sequence = ++_sequence;
                _held.Add(message.Sequence, message);
                if (_aborting is not null || (_stopping && _receiver?.StopBehavior != StopBehavior.HandleReceived))
                {
                    // Keyed, it goes back in its key's order: the abort may give it back together with the key's others.
                    message.LaneKey = _lanes is not null ? message.OrderingKey : null;
                    fate[i] = Rejected;
                }
                else if (_lanes is not null && message.OrderingKey is { } key)
                {
                    message.LaneKey = key;
                    if (_lanes.TryGetValue(key, out var backlog))
                    {
                        // An earlier message of this key is waiting or running: this one follows it.
                        backlog ??= _lanes[key] = new Queue<ReceivedMessage>();
                        backlog.Enqueue(message);
                        fate[i] = Waits;
                    }
                    else
                    {
                        _lanes[key] = null;
                        fate[i] = TakeSlotOrQueue(message) ? Starts : Waits;
                    }
                }
                else
                {
                    fate[i] = TakeSlotOrQueue(message) ? Starts : Waits;
                }
            }
        }
        List<ReceivedMessage>? rejectedDuringAbort = null;
        for (var i = 0; i < messages.Length; i++)
        {
            if (fate[i] == Rejected)
            {
                // Only a keyed message of an ordered subscription waits for the abort; any other goes back at once, as it
                // always did (no order to keep).
                if (aborting is not null && messages[i].LaneKey is not null)
                {
                    (rejectedDuringAbort ??= []).Add(messages[i]);
                }
                else
                {
                    _ = ReturnUnstartedAsync(messages[i]);
                }
            }
            else if (fate[i] == Starts)
            {
                _ = RunAsync(messages[i]);
            }
        }
        if (rejectedDuringAbort is not null)
        {
            _ = ReturnAfterAbortAsync(aborting!, rejectedDuringAbort);
        }
    }

    /// <summary>
    /// Gives back keyed messages that arrived while an abort was giving back the ones before them: after those, and one key's
    /// messages one after the other, because a broker may deliver them again in the order they came back (the Pub/Sub
    /// emulator does). Given back at once, a later message of a key overtook an earlier one the abort was still giving
    /// back, and the other consumer handled it first.
    /// </summary>
    private async Task ReturnAfterAbortAsync(Task aborting, List<ReceivedMessage> rejected)
    {
        try
        {
            await WaitQuietlyAsync(aborting, ReturnTimeout).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // The abort failed: these go back all the same.
        }
        await ReturnInOrderAsync(rejected).ConfigureAwait(false);
    }

    private bool TakeSlotOrQueue(ReceivedMessage message)
    {
        if (_running < _concurrency)
        {
            _running++;
            return true;
        }
        _ready.Enqueue(message);
        return false;
    }

    /// <summary>Runs messages one after another while there are waiting ones: one runner per busy slot, never recursion.</summary>
    private async Task RunAsync(ReceivedMessage first)
    {
        var message = first;
        while (message is not null)
        {
            await ProcessAsync(message).ConfigureAwait(false);
            message = Finish(message, out var laneReturns);
            if (laneReturns is not null)
            {
                // One after the other, in arrival order: a broker may deliver them again in the order they came back.
                _ = ReturnInOrderAsync(laneReturns);
            }
        }
    }

    private async Task ProcessAsync(ReceivedMessage message)
    {
        if (!message.IsUnsettled)
        {
            return; // given back or lost while it waited
        }
        message.Started = true;
        var token = _abort.Token;
        CancellationTokenSource? handlerCancellation = null;
        if (_receiver?.ReportsLostLeases == true)
        {
            handlerCancellation = CancellationTokenSource.CreateLinkedTokenSource(_abort.Token);
            message.HandlerCancellation = handlerCancellation;
            token = handlerCancellation.Token;
            if (message.IsReleased)
            {
                await handlerCancellation.CancelAsync().ConfigureAwait(false); // its lease was lost meanwhile
            }
        }
        try
        {
            await _onDelivery(message, token).ConfigureAwait(false);
            if (message.NeedsReturn)
            {
                // A settlement failed and the callback swallowed its exception: the broker still has to get the message back.
                LogNotSettled(message.MessageId, Subscription.Name);
                MessagingDiagnostics.SettleFailures.Add(1, _metricTags);
                await ReturnQuietlyAsync(message).ConfigureAwait(false);
            }
            else if (message.IsUnsettled && await message.TryReleaseAsync().ConfigureAwait(false))
            {
                // Never expected of the processor; left alone the message would hold a slot and its lease for good. During an
                // abort this is a handler that gave up when cancelled: the abort may have looked at the running messages
                // before this one, so it is given back here (whoever releases it first returns it, once).
                if (_aborting is null)
                {
                    LogNotSettled(message.MessageId, Subscription.Name);
                }
                await ReturnQuietlyAsync(message).ConfigureAwait(false);
            }
        }
        catch (Exception ex)
        {
            if (message.NeedsReturn)
            {
                LogSettleFailed(ex, message.MessageId, Subscription.Name);
                MessagingDiagnostics.SettleFailures.Add(1, _metricTags);
                await ReturnQuietlyAsync(message).ConfigureAwait(false);
            }
            else if (message.IsUnsettled && await message.TryReleaseAsync().ConfigureAwait(false))
            {
                if (_aborting is null)
                {
                    LogHandlingFailed(ex, message.MessageId, Subscription.Name);
                }
                await ReturnQuietlyAsync(message).ConfigureAwait(false);
            }
            // Otherwise it was settled, or the pipeline took it (abort, lost lease): nothing more to do.
        }
        finally
        {
            if (handlerCancellation is not null)
            {
                message.HandlerCancellation = null;
                handlerCancellation.Dispose();
            }
        }
    }

    /// <summary>Accounts for a finished message and picks the next one this runner takes, if any.</summary>
    private ReceivedMessage? Finish(ReceivedMessage finished, out List<ReceivedMessage>? laneReturns)
    {
        laneReturns = null;
        ReceivedMessage? next;
        lock (_lock)
        {
            _held.Remove(finished.Sequence);
            if (finished.LaneKey is { } key && _lanes is not null && _lanes.TryGetValue(key, out var backlog))
            {
                if ((finished.Retried || !finished.IsSettled || (_stopping && _receiver?.StopBehavior != StopBehavior.HandleReceived)) && backlog is { Count: > 0 })
                {
                    // Its retry (or its return: given back, lease lost, settlement failed) puts it back in front of the rest of
                    // its key: those go back to the broker too, which delivers them again after it (Pub/Sub redelivers a key's
                    // later messages after a nack by itself). So do those a stop gives back, behind their running head.
                    laneReturns = [.. backlog];
                    _lanes.Remove(key);
                }
                else if (backlog is { Count: > 0 })
                {
                    _ready.Enqueue(backlog.Dequeue());
                }
                else
                {
                    _lanes.Remove(key);
                }
            }
            if (!_ready.TryDequeue(out next))
            {
                _running--;
            }
            _outstanding--;
        }
        ReleasePlace(finished);
        if (Volatile.Read(ref _outstanding) == 0)
        {
            _drained.TrySetResult();
        }
        return next;
    }

    private void ReleasePlace(ReceivedMessage message)
    {
        if (message.HoldsPlace)
        {
            message.HoldsPlace = false;
            _places.Release();
        }
    }

    /// <summary>Gives back a message whose handler never started, and accounts for it.</summary>
    private async Task ReturnUnstartedAsync(ReceivedMessage message)
    {
        await GiveBackAsync(message).ConfigureAwait(false);
        AccountUnstarted(message);
    }

    /// <summary>Accounts for a message whose handler never started, once it is given back (by whoever gave it back).</summary>
    private void AccountUnstarted(ReceivedMessage message)
    {
        lock (_lock)
        {
            _held.Remove(message.Sequence);
            _outstanding--;
        }
        ReleasePlace(message);
        if (Volatile.Read(ref _outstanding) == 0)
        {
            _drained.TrySetResult();
        }
    }

    /// <summary>
    /// Gives a message back unsettled unless someone else has it already: at its handler's request (a graceful stop during a
    /// held retry), or when the pipeline gives it back.
    /// </summary>
    internal async Task GiveBackAsync(ReceivedMessage message)
    {
        if (await message.TryReleaseAsync().ConfigureAwait(false))
        {
            await ReturnQuietlyAsync(message).ConfigureAwait(false);
        }
    }

    private async Task WaitQuietlyAsync(Task task, TimeSpan limit)
    {
        if (task.IsCompleted || limit <= TimeSpan.Zero)
        {
            return;
        }
        try
        {
            await task.WaitAsync(limit, _time).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // Bounded: the rest of the lane goes back without it.
        }
    }

    private async Task ReturnQuietlyAsync(ReceivedMessage message)
    {
        MessagingDiagnostics.ReturnedMessages.Add(1, _metricTags);
        message.BeginReturn();
        try
        {
            using var timeout = new CancellationTokenSource(ReturnTimeout, _time);
            await message.ReturnAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // The broker gives it back by itself when the lease expires or the connection closes.
            LogReturnFailed(message.MessageId, Subscription.Name, ex.Message);
        }
        finally
        {
            message.EndReturn();
        }
    }

    // ---- leases --------------------------------------------------------------------------------

    internal Task RenewalCompletedAsync() => Volatile.Read(ref _renewalRound).Task;

    internal void OnLeaseLost(ReceivedMessage message, string reason)
    {
        LogLeaseLost(message.MessageId, Subscription.Name, reason);
        MessagingDiagnostics.LostLeases.Add(1, _metricTags);
        try
        {
            message.HandlerCancellation?.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The handler finished meanwhile.
        }
    }

    private async Task RenewLoopAsync(TimeSpan interval)
    {
        var token = _stopRenewal.Token;
        var receiver = _receiver!;
        while (!token.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(interval, _time, token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            var now = _time.GetUtcNow();
            List<ReceivedMessage> due;
            lock (_lock)
            {
                due = [.. _held.Values.Where(m => now - m.LeasedAt >= interval / 2)];
            }
            // The round is published before any message is marked, so a settlement that finds its message being renewed
            // always has this round to wait for.
            var round = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            Volatile.Write(ref _renewalRound, round);
            var taken = due.Where(m => m.TryBeginRenewal()).ToList();
            if (taken.Count == 0)
            {
                round.TrySetResult();
                continue;
            }
            try
            {
                // Bounded, so that a settlement waiting behind this renewal never waits on a broker that does not answer; two
                // intervals still end before a lease of three runs out.
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(token);
                timeout.CancelAfter(interval * 2);
                await receiver.RenewLeasesAsync(taken, timeout.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (!token.IsCancellationRequested)
            {
                // Tried again at the next tick; a lease that runs out means the broker delivers the message again, never a loss.
                LogRenewFailed(ex, taken.Count, Subscription.Name);
            }
            catch (Exception)
            {
                // Stopping.
            }
            finally
            {
                foreach (var message in taken)
                {
                    message.EndRenewal();
                }
                round.TrySetResult();
            }
        }
    }

    private static TaskCompletionSource CompletedRound()
    {
        var round = new TaskCompletionSource();
        round.SetResult();
        return round;
    }

    // ---- stopping ------------------------------------------------------------------------------

    /// <summary>
    /// Graceful stop: the receiver stops taking messages; messages not started are given back (or handled, as the transport's
    /// <see cref="ITransportReceiver.StopBehavior"/> says); running handlers finish. If <paramref name="cancellationToken"/>
    /// fires first, the pipeline aborts: handlers are cancelled and everything unsettled goes back to the broker.
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_aborting is not null)
        {
            await _aborting.ConfigureAwait(false);
            return;
        }
        MarkStopping();
        try
        {
            if (_receiver is not null)
            {
                await _receiver.StopReceivingAsync(cancellationToken).ConfigureAwait(false);
            }
            if (_receiver?.StopBehavior != StopBehavior.HandleReceived)
            {
                // The rest of a lane whose head runs goes back after the head settles (see Finish), never before it.
                await ReturnInOrderAsync(TakeWaiting(keepLanesBehindRunning: true)).ConfigureAwait(false);
            }
            ReleaseSelf();
            await _drained.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            await _stopRenewal.CancelAsync().ConfigureAwait(false);
            await _renewalLoop.ConfigureAwait(false);
            if (_receiver is not null)
            {
                await _receiver.DrainedAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            LogStopTimedOut(Subscription.Name);
            await AbortAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Takes the messages waiting for a handler (see <see cref="TakeWaiting"/>), and lists the others held.</summary>
    private (List<ReceivedMessage> Waiting, List<ReceivedMessage> Running) TakeUnsettled()
    {
        var waiting = TakeWaiting();
        lock (_lock)
        {
            var waitingSequences = waiting.Select(m => m.Sequence).ToHashSet();
            return (waiting, _held.Values.Where(m => !waitingSequences.Contains(m.Sequence)).ToList());
        }
    }

    private List<ReceivedMessage> TakeWaiting(bool keepLanesBehindRunning = false)
    {
        lock (_lock)
        {
            var waiting = new List<ReceivedMessage>(_ready);
            _ready.Clear();
            if (_lanes is not null)
            {
                var headsWaiting = keepLanesBehindRunning ? waiting.Select(m => m.LaneKey).OfType<string>().ToHashSet(StringComparer.Ordinal) : null;
                foreach (var (key, backlog) in _lanes)
                {
                    if (backlog is not null && (headsWaiting is null || headsWaiting.Contains(key)))
                    {
                        waiting.AddRange(backlog);
                        backlog.Clear();
                    }
                }
            }
            return waiting;
        }
    }

    /// <summary>
    /// Gives messages back: those of one ordering key one after the other in arrival order (a broker may deliver them again
    /// in the order they came back, as the Pub/Sub emulator does), the others and different keys side by side. Where the
    /// receiver gives messages back together (<see cref="ITransportReceiver.ReturnsTogether"/>), a key's messages go back in
    /// one call instead.
    /// </summary>
    /// <param name="messages">The messages to give back.</param>
    /// <param name="isUnstarted">Which of them never reached a handler (the pipeline accounts for those once they are back); all of them when null.</param>
    /// <param name="taken">Those the caller has already taken (<see cref="ReceivedMessage.TryReleaseAsync"/>) to give back.</param>
    /// <remarks>
    /// Bounded: once <see cref="ReturnTimeout"/> has passed (a broker that does not answer), the rest go back side by side,
    /// so that a long lane cannot make a stop or an abort wait one timeout per message.
    /// </remarks>
    private Task ReturnInOrderAsync(IEnumerable<ReceivedMessage> messages, Func<ReceivedMessage, bool>? isUnstarted = null, IReadOnlySet<long>? taken = null)
    {
        var started = _time.GetTimestamp();
        var together = _receiver?.ReturnsTogether == true;
        return Task.WhenAll(messages
            .GroupBy(m => m.LaneKey ?? m.Sequence.ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparer.Ordinal)
            .Select(async lane =>
            {
                var ordered = lane.OrderBy(m => m.Sequence).ToList();
                if (together && ordered[0].LaneKey is not null)
                {
                    await ReturnLaneTogetherAsync(ordered, isUnstarted, taken, started).ConfigureAwait(false);
                    return;
                }
                List<Task>? late = null;
                foreach (var message in ordered)
                {
                    var giving = taken?.Contains(message.Sequence) == true ? ReturnQuietlyAsync(message)
                        : isUnstarted is null || isUnstarted(message) ? ReturnUnstartedAsync(message)
                        : GiveBackAsync(message);
                    if (_time.GetElapsedTime(started) < ReturnTimeout)
                    {
                        await giving.ConfigureAwait(false);
                        // Its runner may be the one giving it back (a handler cancelled by the abort, a settlement that fails):
                        // wait for that too.
                        await WaitForOthersAsync(message, started).ConfigureAwait(false);
                    }
                    else
                    {
                        (late ??= []).Add(giving);
                    }
                }
                if (late is not null)
                {
                    await Task.WhenAll(late).ConfigureAwait(false);
                }
            }));
    }

    /// <summary>
    /// Gives one key's messages back in one call to the receiver, in arrival order. A message someone else gives back (its
    /// own runner, after its handler gave up) splits the call: what came before it goes first, then it is waited for.
    /// </summary>
    private async Task ReturnLaneTogetherAsync(List<ReceivedMessage> lane, Func<ReceivedMessage, bool>? isUnstarted, IReadOnlySet<long>? taken, long started)
    {
        var batch = new List<ReceivedMessage>(lane.Count);
        foreach (var message in lane)
        {
            if (taken?.Contains(message.Sequence) == true || await message.TryReleaseAsync().ConfigureAwait(false))
            {
                batch.Add(message);
                continue;
            }
            // Settled already, or given back by someone else.
            if (batch.Count > 0)
            {
                await ReturnTogetherQuietlyAsync(batch, isUnstarted).ConfigureAwait(false);
                batch = new List<ReceivedMessage>(lane.Count);
            }
            await WaitForOthersAsync(message, started).ConfigureAwait(false);
            if (isUnstarted is null || isUnstarted(message))
            {
                AccountUnstarted(message);
            }
        }
        if (batch.Count > 0)
        {
            await ReturnTogetherQuietlyAsync(batch, isUnstarted).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Waits, within the return bound, for whoever else has a message: a settlement under way (an acknowledgement that may
    /// still fail), then a return under way (its runner's, after its handler gave up or its settlement failed). Until then a
    /// later message of its key must not go back: the broker would have it while this one is still held here.
    /// </summary>
    private async Task WaitForOthersAsync(ReceivedMessage message, long started)
    {
        await WaitQuietlyAsync(message.SettlementDone, ReturnTimeout - _time.GetElapsedTime(started)).ConfigureAwait(false);
        await WaitQuietlyAsync(message.ReturnDone, ReturnTimeout - _time.GetElapsedTime(started)).ConfigureAwait(false);
    }

    private async Task ReturnTogetherQuietlyAsync(List<ReceivedMessage> messages, Func<ReceivedMessage, bool>? isUnstarted)
    {
        MessagingDiagnostics.ReturnedMessages.Add(messages.Count, _metricTags);
        try
        {
            using var timeout = new CancellationTokenSource(ReturnTimeout, _time);
            await _receiver!.ReturnTogetherAsync(messages, timeout.Token).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // The broker gives them back by itself when their leases expire or the connection closes.
            foreach (var message in messages)
            {
                LogReturnFailed(message.MessageId, Subscription.Name, ex.Message);
            }
        }
        finally
        {
            foreach (var message in messages)
            {
                message.EndReturn();
                if (isUnstarted is null || isUnstarted(message))
                {
                    AccountUnstarted(message);
                }
            }
        }
    }

    private void ReleaseSelf()
    {
        if (Interlocked.Exchange(ref _selfReleased, 1) == 0)
        {
            bool drained;
            lock (_lock)
            {
                drained = --_outstanding == 0;
            }
            if (drained)
            {
                _drained.TrySetResult();
            }
        }
    }

    /// <summary>
    /// Stops at once: handlers are cancelled, and every unsettled message, running or waiting, is given back to the broker
    /// (best effort: a transport that lost its connection gets them back from the broker anyway). Idempotent.
    /// </summary>
    public Task AbortAsync()
    {
        lock (_lock)
        {
            MarkStopping();
            _aborting ??= AbortCoreAsync();
            return _aborting;
        }
    }

    private async Task AbortCoreAsync()
    {
        await Task.Yield();
        // Renewal stops first: taking a message that is being renewed waits for the renewal, which a broker that does not
        // answer would hold for two intervals.
        await _stopRenewal.CancelAsync().ConfigureAwait(false);
        List<ReceivedMessage> waiting, running;
        HashSet<long>? taken = null;
        if (_lanes is not null && _receiver?.ReturnsTogether == true)
        {
            // A key's running message is taken before its handler is cancelled, so that it goes back in the same call as the
            // rest of its key instead of by its runner, one call ahead of them.
            (waiting, running) = TakeUnsettled();
            taken = [];
            foreach (var message in running)
            {
                if (message.LaneKey is not null && await message.TryReleaseAsync().ConfigureAwait(false))
                {
                    taken.Add(message.Sequence);
                }
            }
            await _abort.CancelAsync().ConfigureAwait(false);
        }
        else
        {
            await _abort.CancelAsync().ConfigureAwait(false);
            (waiting, running) = TakeUnsettled();
        }
        var unstarted = waiting.Select(m => m.Sequence).ToHashSet();
        await ReturnInOrderAsync(waiting.Concat(running), m => unstarted.Contains(m.Sequence), taken).ConfigureAwait(false);
        ReleaseSelf();
        try
        {
            await _renewalLoop.ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Stopping anyway.
        }
    }

    /// <summary>Aborts (when not stopped already) and disposes the receiver.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }
        if (!_drained.Task.IsCompleted)
        {
            if (_receiver is not null && !_stopping)
            {
                // Disposed without a stop: receiving ends first (within a bound), so that nothing the abort gives back is
                // received again straight away, each time counting as one more delivery.
                try
                {
                    using var bound = new CancellationTokenSource(TimeSpan.FromSeconds(5), _time);
                    MarkStopping();
                    await _receiver.StopReceivingAsync(bound.Token).ConfigureAwait(false);
                }
                catch (Exception)
                {
                    // The connection may be gone already; the abort below gives back what it can.
                }
            }
            await AbortAsync().ConfigureAwait(false);
        }
        if (_receiver is not null)
        {
            await _receiver.DisposeAsync().ConfigureAwait(false);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "A delivery of message {MessageId} on subscription {Subscription} was not settled by its handler path; it was given back to the broker")]
    private partial void LogNotSettled(string? messageId, string subscription);

    [LoggerMessage(Level = LogLevel.Error, Message = "Could not settle message {MessageId} on subscription {Subscription}; it was given back to the broker")]
    private partial void LogSettleFailed(Exception exception, string? messageId, string subscription);

    [LoggerMessage(Level = LogLevel.Error, Message = "Handling message {MessageId} on subscription {Subscription} failed before it was settled; it was given back to the broker")]
    private partial void LogHandlingFailed(Exception exception, string? messageId, string subscription);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Could not give message {MessageId} of subscription {Subscription} back: {Reason}; the broker returns it when its lease or connection ends")]
    private partial void LogReturnFailed(string? messageId, string subscription, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The lease of message {MessageId} on subscription {Subscription} was lost ({Reason}); its handler is cancelled and the broker delivers it again")]
    private partial void LogLeaseLost(string? messageId, string subscription, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not extend the leases of {Count} message(s) of subscription {Subscription}; trying again at the next renewal")]
    private partial void LogRenewFailed(Exception exception, int count, string subscription);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Subscription {Subscription} did not drain before its stop deadline; unsettled messages are given back")]
    private partial void LogStopTimedOut(string subscription);
}
