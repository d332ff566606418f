using System.Threading.Channels;
using Grpc.Core;
using Messaging.PubSub.Grpc;

namespace Messaging.PubSub;

/// <summary>
/// Batches publishes to one topic. Up to <see cref="MaxRequestsInFlight"/> requests are in flight per topic; whatever
/// is published meanwhile (up to the count and byte thresholds, optionally waiting
/// <see cref="PubSubTransportOptions.MaxBatchDelay"/> for more) goes in the next request. Messages are grouped by
/// ordering key, since Pub/Sub requires one key per request; a request for a key starts only after the previous
/// request for that key finished, so publish order is kept within a key while unordered messages go out in parallel.
/// Each caller's task completes only when Pub/Sub has accepted (durably stored) all of its messages; it completes once
/// per call, not once per message.
/// <para>
/// The queue is bounded: at most <see cref="PubSubTransportOptions.MaxQueuedEvents"/> messages and
/// <see cref="PubSubTransportOptions.MaxQueuedBytes"/> bytes are held, from the publish until Pub/Sub answers their
/// request. A call that does not fit waits for room, behind earlier waiting calls so that publish order is kept, without
/// holding its messages in the queue; a call larger than the bound goes alone once nothing else is held. A caller whose
/// token fires gets <see cref="OperationCanceledException"/> at once, and those of its messages not yet in a request are
/// never sent (those already in one may still be stored: a request is not taken back).
/// </para>
/// <para>
/// As in Google's client libraries, a failed request for an ordering key (after its retries) pauses that key: the
/// application's events of the key queued behind it, and any it publishes later, fail with
/// <see cref="OrderingKeyPausedException"/> without being sent, until <see cref="Resume"/>. Otherwise they would be stored
/// ahead of the failed ones and the key's order would break. Internal publishes (dead letters, replays) do not pause keys:
/// their failure is handled by giving the message back.
/// </para>
/// </summary>
internal sealed class TopicPublisher : IAsyncDisposable
{
    private readonly PubSubConnection _connection;
    private readonly PubSubTransportOptions _options;
    private readonly TimeProvider _time;
    // Unbounded, because admission below bounds it: a call is written to it whole, in order, once it fits.
    private readonly Channel<Pending> _queue = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private readonly SemaphoreSlim _requestSlots = new(MaxRequestsInFlight, MaxRequestsInFlight);
    private int _inFlight; // requests sent and not yet answered
    private long _queuedCount; // messages in the queue, not yet taken into a request
    private long _queuedBytes;
    private TaskCompletionSource? _wake; // the loop waits on it for a full request's worth or an answer
    private readonly Dictionary<string, Task> _keyTails = new(StringComparer.Ordinal); // touched by the loop only

    // Admission. One lock guards these and every call's Cancelled flag, so a message is either taken into a request or
    // dropped for its cancelled call, never both.
    private readonly Lock _lock = new();
    private readonly LinkedList<CallCompletion> _waiting = new(); // calls waiting for room, in publish order
    private int _heldCount;
    private long _heldBytes;
    private bool _closed;
    private long _sequence; // numbers calls in publish order
    private readonly Dictionary<string, KeyFailure> _failedKeys = new(StringComparer.Ordinal);

    /// <summary>Publish requests in flight per topic at most.</summary>
    public const int MaxRequestsInFlight = 8;

    public TopicPublisher(PubSubConnection connection, string topicResource, PubSubTransportOptions options, TimeProvider time)
    {
        _connection = connection;
        TopicResource = topicResource;
        _options = options;
        _time = time;
        _loop = Task.Run(LoopAsync);
    }

    public string TopicResource { get; }

    /// <summary>
    /// Queues messages in order, waiting for room when the queue is full; the task completes once Pub/Sub has accepted
    /// every one of them, or is cancelled (dropping those not yet in a request) when <paramref name="cancellationToken"/> fires.
    /// With <paramref name="pausesOrderingKeys"/> (the application's publishes) a failure pauses the ordering key, and a
    /// paused key's messages are refused.
    /// </summary>
    /// <remarks><paramref name="sizes"/>: each message's size as <see cref="PubSubCodec.SizeOf"/> counts it, when the caller has it already.</remarks>
    public Task PublishAsync(IReadOnlyList<PubsubMessage> messages, CancellationToken cancellationToken, bool pausesOrderingKeys = true, IReadOnlyList<long>? sizes = null)
    {
        if (messages.Count == 0)
        {
            return Task.CompletedTask;
        }
        if (cancellationToken.IsCancellationRequested)
        {
            return Task.FromCanceled(cancellationToken);
        }
        var call = new CallCompletion(messages.Count) { PausesOrderingKeys = pausesOrderingKeys };
        var items = new Pending[messages.Count];
        for (var i = 0; i < items.Length; i++)
        {
            items[i] = new Pending(messages[i], (sizes?[i] ?? PubSubCodec.SizeOf(messages[i])) + 64, call);
            call.Bytes += items[i].Size;
        }
        call.Items = items;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_closed, typeof(PubSubTransport));
            if (pausesOrderingKeys && _failedKeys.Count > 0)
            {
                foreach (var message in messages)
                {
                    if (message.OrderingKey.Length > 0 && _failedKeys.TryGetValue(message.OrderingKey, out var failure) && !failure.Resumed)
                    {
                        return Task.FromException(new OrderingKeyPausedException(TopicName, message.OrderingKey, failure.Error));
                    }
                }
            }
            call.Sequence = ++_sequence;
            if (_waiting.Count == 0 && Fits(call))
            {
                Admit(call);
            }
            else
            {
                call.Waiting = _waiting.AddLast(call);
            }
        }
        if (cancellationToken.CanBeCanceled)
        {
            call.Track(cancellationToken.UnsafeRegister(static (state, token) =>
            {
                var (publisher, cancelled) = ((TopicPublisher, CallCompletion))state!;
                publisher.Cancel(cancelled, token);
            }, (this, call)));
        }
        return call.Task;
    }

    /// <summary>Whether a call may join the queue now: it fits the bounds, or nothing else is held (a call larger than the bounds goes alone).</summary>
    private bool Fits(CallCompletion call) =>
        _heldCount == 0 || (_heldCount + call.Items.Length <= _options.MaxQueuedEvents && _heldBytes + call.Bytes <= _options.MaxQueuedBytes);

    /// <summary>Writes a call's messages to the queue; under the lock, so calls enter it in the order they were admitted.</summary>
    private void Admit(CallCompletion call)
    {
        _heldCount += call.Items.Length;
        _heldBytes += call.Bytes;
        foreach (var item in call.Items)
        {
            _queue.Writer.TryWrite(item); // unbounded, and not completed before _closed is set
        }
        Interlocked.Add(ref _queuedBytes, call.Bytes);
        if (Interlocked.Add(ref _queuedCount, call.Items.Length) >= _options.MaxBatchCount || Volatile.Read(ref _queuedBytes) >= _options.MaxBatchBytes)
        {
            Wake();
        }
    }

    private void Wake() => Interlocked.Exchange(ref _wake, null)?.TrySetResult();

    private bool FullRequestQueued() =>
        Volatile.Read(ref _queuedCount) >= _options.MaxBatchCount || Volatile.Read(ref _queuedBytes) >= _options.MaxBatchBytes;

    /// <summary>At most this long a request waits for more messages while others are in flight (Google's clients wait 10 ms).</summary>
    private static readonly TimeSpan MaxFillWait = TimeSpan.FromMilliseconds(10);

    /// <summary>
    /// While other requests are in flight, a request is sent with a full request's worth of messages, once one of them is
    /// answered, or after <see cref="MaxFillWait"/>; with none in flight it goes at once. So a publisher that publishes one
    /// event at a time gets requests nearly as full as a caller batching by hand (the emulator got 17 to 30 messages per
    /// request before, against that caller's 100), and a lone event never waits.
    /// </summary>
    private async Task WhileOthersInFlightAsync()
    {
        var started = _time.GetTimestamp();
        while (Volatile.Read(ref _inFlight) > 0 && !FullRequestQueued())
        {
            var left = MaxFillWait - _time.GetElapsedTime(started);
            if (left <= TimeSpan.Zero)
            {
                return;
            }
            var wake = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            Volatile.Write(ref _wake, wake);
            if (Volatile.Read(ref _inFlight) == 0 || FullRequestQueued())
            {
                Interlocked.CompareExchange(ref _wake, null, wake);
                return;
            }
            // Without an exception when the wait is up: at moderate rates that happens for most requests.
            await wake.Task.WaitAsync(left, _time).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            if (!wake.Task.IsCompleted)
            {
                Interlocked.CompareExchange(ref _wake, null, wake);
                return;
            }
        }
    }

    /// <summary>Gives back the room of messages that were answered or dropped, and admits waiting calls that now fit.</summary>
    private void Release(int count, long bytes)
    {
        lock (_lock)
        {
            ReleaseLocked(count, bytes);
        }
    }

    private void ReleaseLocked(int count, long bytes)
    {
        _heldCount -= count;
        _heldBytes -= bytes;
        while (_waiting.First is { } first && Fits(first.Value))
        {
            _waiting.RemoveFirst();
            first.Value.Waiting = null;
            Admit(first.Value);
        }
        ForgetResumedKeys();
    }

    /// <summary>
    /// A resumed key's record is kept while messages published before its failure may still be queued (they must still be
    /// refused); once nothing is held, none can be, and the record goes.
    /// </summary>
    private void ForgetResumedKeys()
    {
        if (_heldCount == 0 && _waiting.Count == 0 && _failedKeys.Count > 0)
        {
            foreach (var (key, failure) in _failedKeys)
            {
                if (failure.Resumed)
                {
                    _failedKeys.Remove(key);
                }
            }
        }
    }

    /// <summary>Lets the application publish <paramref name="orderingKey"/> again after a failure paused it.</summary>
    public void Resume(string orderingKey)
    {
        lock (_lock)
        {
            if (_failedKeys.TryGetValue(orderingKey, out var failure))
            {
                failure.Resumed = true;
                ForgetResumedKeys();
            }
        }
    }

    private string TopicName => TopicResource[(TopicResource.LastIndexOf('/') + 1)..];

    private void Cancel(CallCompletion call, CancellationToken token)
    {
        lock (_lock)
        {
            if (call.Task.IsCompleted)
            {
                return;
            }
            // Its queued messages are dropped when the loop reaches them; a waiting call never enters the queue.
            call.Cancelled = true;
            if (call.Waiting is { } node)
            {
                _waiting.Remove(node);
                call.Waiting = null;
                ReleaseLocked(0, 0); // the calls behind it may fit now
            }
        }
        call.Cancel(token);
    }

    private async Task LoopAsync()
    {
        var reader = _queue.Reader;
        while (await reader.WaitToReadAsync(CancellationToken.None).ConfigureAwait(false))
        {
            // A request slot first, then the batch: what is published while all slots are busy goes into one request,
            // instead of a request per message that happened to be there when the previous one was filled.
            await _requestSlots.WaitAsync(CancellationToken.None).ConfigureAwait(false);
            await WhileOthersInFlightAsync().ConfigureAwait(false);
            var batch = new Batch();
            Fill(reader, batch);
            if (_options.MaxBatchDelay > TimeSpan.Zero && !batch.IsFull(_options))
            {
                using var delay = new CancellationTokenSource(_options.MaxBatchDelay, _time);
                try
                {
                    while (!batch.IsFull(_options) && await reader.WaitToReadAsync(delay.Token).ConfigureAwait(false))
                    {
                        Fill(reader, batch);
                    }
                }
                catch (OperationCanceledException) when (delay.IsCancellationRequested)
                {
                    // The delay is up: send what we have.
                }
            }
            if (batch.Items.Count > 0)
            {
                Interlocked.Increment(ref _inFlight);
                _ = SendAndReleaseAsync(batch.Items);
            }
            else
            {
                _requestSlots.Release(); // every message that was there belonged to a cancelled call
            }
        }
        // Drain: wait until every request in flight has finished.
        for (var i = 0; i < MaxRequestsInFlight; i++)
        {
            await _requestSlots.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }

    private async Task SendAndReleaseAsync(List<Pending> items)
    {
        try
        {
            await SendAsync(items).ConfigureAwait(false);
        }
        finally
        {
            Interlocked.Decrement(ref _inFlight);
            _requestSlots.Release();
            Wake();
        }
    }

    private void Fill(ChannelReader<Pending> reader, Batch batch)
    {
        while (!batch.IsFull(_options) && reader.TryPeek(out var next))
        {
            if (Volatile.Read(ref next.Call.Cancelled))
            {
                // Its caller gave up: drop it here rather than let it take a place in the request.
                reader.TryRead(out _);
                Dequeued(next);
                Release(1, next.Size);
                continue;
            }
            if (batch.Items.Count > 0 && batch.Bytes + next.Size > _options.MaxBatchBytes)
            {
                batch.Closed = true;
                return;
            }
            reader.TryRead(out _);
            Dequeued(next);
            batch.Items.Add(next);
            batch.Bytes += next.Size;
        }
    }

    private void Dequeued(Pending item)
    {
        Interlocked.Decrement(ref _queuedCount);
        Interlocked.Add(ref _queuedBytes, -item.Size);
    }

    private async Task SendAsync(List<Pending> items)
    {
        var groups = new Dictionary<string, List<Pending>>(StringComparer.Ordinal);
        foreach (var item in items)
        {
            if (!groups.TryGetValue(item.Message.OrderingKey, out var group))
            {
                groups[item.Message.OrderingKey] = group = [];
            }
            group.Add(item);
        }
        // Runs on the loop's thread up to the first await, so the per-key tails are only ever touched there.
        var sends = new List<Task>(groups.Count);
        foreach (var (key, group) in groups)
        {
            if (key.Length == 0)
            {
                sends.Add(SendGroupAsync(group));
                continue;
            }
            var send = _keyTails.TryGetValue(key, out var previous) ? SendGroupAfterAsync(previous, group) : SendGroupAsync(group);
            _keyTails[key] = send;
            sends.Add(send);
        }
        if (_keyTails.Count > 1024)
        {
            foreach (var done in _keyTails.Where(t => t.Value.IsCompleted).Select(t => t.Key).ToList())
            {
                _keyTails.Remove(done);
            }
        }
        await Task.WhenAll(sends).ConfigureAwait(false);
    }

    private async Task SendGroupAfterAsync(Task previous, List<Pending> group)
    {
        await previous.ConfigureAwait(false); // SendGroupAsync never throws
        await SendGroupAsync(group).ConfigureAwait(false);
    }

    private async Task SendGroupAsync(List<Pending> all)
    {
        var (group, refused) = Claim(all);
        if (refused is not null)
        {
            foreach (var (item, error) in refused)
            {
                item.Call.Failed(error);
            }
        }
        if (group.Count == 0)
        {
            return;
        }
        try
        {
            var request = new PublishRequest { Topic = TopicResource };
            request.Messages.AddRange(group.Select(p => p.Message));
            await PubSubConnection.WithRetryAsync(
                o => _connection.Publisher.PublishAsync(request, o).ResponseAsync, _stop.Token).ConfigureAwait(false);
            foreach (var item in group)
            {
                item.Call.Accepted();
            }
        }
        catch (Exception ex)
        {
            var error = ex is RpcException { StatusCode: StatusCode.NotFound }
                ? new InvalidOperationException($"Pub/Sub topic '{TopicResource}' does not exist. Provision it first (Messaging:Provisioning).", ex)
                : ex;
            var key = group[0].Message.OrderingKey;
            if (key.Length > 0 && group.Any(p => p.Call.PausesOrderingKeys))
            {
                // Before any caller hears of the failure, so that whatever it publishes next for the key is refused. Every
                // call published so far is older than the failure: those of the key still queued are refused even after a
                // quick resume.
                lock (_lock)
                {
                    _failedKeys[key] = new KeyFailure(_sequence + 1, error);
                }
            }
            foreach (var item in group)
            {
                item.Call.Failed(error);
            }
        }
        finally
        {
            Release(group.Count, group.Sum(p => p.Size));
        }
    }

    /// <summary>
    /// Takes the messages of one ordering key into a request, except those whose call was cancelled meanwhile (dropped) and
    /// the application's messages of a paused key published before it was resumed (refused, returned with their error).
    /// </summary>
    private (List<Pending> Claimed, List<(Pending Item, Exception Error)>? Refused) Claim(List<Pending> group)
    {
        var claimed = new List<Pending>(group.Count);
        List<(Pending, Exception)>? refused = null;
        var droppedCount = 0;
        var droppedBytes = 0L;
        lock (_lock)
        {
            var key = group[0].Message.OrderingKey;
            var failure = key.Length > 0 && _failedKeys.Count > 0 && _failedKeys.TryGetValue(key, out var found) ? found : null;
            foreach (var item in group)
            {
                if (item.Call.Cancelled)
                {
                    droppedCount++;
                    droppedBytes += item.Size;
                }
                else if (failure is not null && item.Call.PausesOrderingKeys && (!failure.Resumed || item.Call.Sequence < failure.Before))
                {
                    droppedCount++;
                    droppedBytes += item.Size;
                    (refused ??= []).Add((item, new OrderingKeyPausedException(TopicName, key, failure.Error)));
                }
                else
                {
                    claimed.Add(item);
                }
            }
            if (droppedCount > 0)
            {
                ReleaseLocked(droppedCount, droppedBytes);
            }
        }
        return (claimed, refused);
    }

    public async ValueTask DisposeAsync()
    {
        List<CallCompletion> waiting;
        lock (_lock)
        {
            _closed = true;
            waiting = [.. _waiting];
            _waiting.Clear();
        }
        foreach (var call in waiting)
        {
            call.Failed(new ObjectDisposedException(nameof(PubSubTransport)));
        }
        _queue.Writer.TryComplete();
        await _stop.CancelAsync().ConfigureAwait(false);
        await _loop.ConfigureAwait(false);
        while (_queue.Reader.TryRead(out var left))
        {
            left.Call.Failed(new ObjectDisposedException(nameof(PubSubTransport)));
        }
        _stop.Dispose();
        _requestSlots.Dispose();
    }

    private readonly record struct Pending(PubsubMessage Message, long Size, CallCompletion Call);

    /// <summary>A paused ordering key: calls numbered below <paramref name="before"/> are refused even after it is resumed.</summary>
    private sealed class KeyFailure(long before, Exception error)
    {
        public long Before { get; } = before;

        public Exception Error { get; } = error;

        public bool Resumed { get; set; }
    }

    /// <summary>
    /// One caller's messages and their outcome: accepted when the last is accepted, failed at the first failure, or cancelled
    /// by the caller's token.
    /// </summary>
    private sealed class CallCompletion(int count)
    {
        private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _remaining = count;
        private CancellationTokenRegistration? _registration;

        /// <summary>Set (under the publisher's lock) when the caller's token fired: messages not yet in a request are dropped.</summary>
        public bool Cancelled;

        public Task Task => _done.Task;

        public Pending[] Items { get; set; } = [];

        public long Bytes { get; set; }

        /// <summary>Its place in publish order (under the publisher's lock).</summary>
        public long Sequence { get; set; }

        /// <summary>An application publish: its failure pauses the ordering key, and a paused key refuses it.</summary>
        public bool PausesOrderingKeys { get; init; }

        /// <summary>Its node in the publisher's waiting list while it waits for room (under the publisher's lock).</summary>
        public LinkedListNode<CallCompletion>? Waiting { get; set; }

        public void Accepted()
        {
            if (Interlocked.Decrement(ref _remaining) == 0 && _done.TrySetResult())
            {
                Untrack();
            }
        }

        public void Failed(Exception error)
        {
            if (_done.TrySetException(error))
            {
                Untrack();
            }
        }

        public void Cancel(CancellationToken token)
        {
            if (_done.TrySetCanceled(token))
            {
                Untrack();
            }
        }

        /// <summary>Keeps the caller's token registration until the call ends, so a long-lived token does not keep finished calls.</summary>
        public void Track(CancellationTokenRegistration registration)
        {
            lock (_done)
            {
                if (!_done.Task.IsCompleted)
                {
                    _registration = registration;
                    return;
                }
            }
            registration.Unregister();
        }

        private void Untrack()
        {
            CancellationTokenRegistration? registration;
            lock (_done)
            {
                registration = _registration;
                _registration = null;
            }
            // Unregister, not Dispose: this may run inside the registration's own callback, which Dispose would wait for.
            registration?.Unregister();
        }
    }

    private sealed class Batch
    {
        public List<Pending> Items { get; } = [];

        public long Bytes { get; set; }

        public bool Closed { get; set; }

        public bool IsFull(PubSubTransportOptions options) => Closed || Items.Count >= options.MaxBatchCount || Bytes >= options.MaxBatchBytes;
    }
}
