using Grpc.Core;
using Messaging.PubSub.Grpc;

namespace Messaging.PubSub;

/// <summary>
/// Sends acknowledgements and ack-deadline changes on the StreamingPull stream the messages came on, as later requests of
/// that stream (<c>ack_ids</c>, <c>modify_deadline_seconds</c> and <c>modify_deadline_ack_ids</c>), instead of one unary
/// call each. Whatever is asked while a request is being written joins the next request, so a busy stream writes one
/// request per write rather than one per message, and an idle one writes at once.
/// <para>
/// Pub/Sub's API reference: the ack ids sent on a stream may be of messages received on that stream or on another one;
/// acknowledging twice is not an error; an expired ack id means the message may be delivered again; a malformed ack id
/// aborts the stream with <c>INVALID_ARGUMENT</c>. The service confirms what it received on the stream only for
/// subscriptions with exactly-once delivery, which this transport does not create. So a request handed to the stream
/// counts as sent: should the stream break before the service reads it, the message is delivered again when its
/// deadline passes, which at-least-once delivery allows and the pipeline handles (a later attempt, or a duplicate).
/// </para>
/// <para>
/// A request the stream can no longer carry (the stream was half-closed for a graceful stop, ended, or a write failed)
/// is answered <see langword="false"/>, and the caller sends it as a unary call, which the service does confirm.
/// </para>
/// </summary>
internal sealed class StreamSettler(IClientStreamWriter<StreamingPullRequest> requests, CancellationToken streamKilled)
{
    /// <summary>Ack ids per request; Google's own clients send at most 2,500 in one (requests are limited in size).</summary>
    internal const int MaxIdsPerRequest = 2500;

    private readonly Lock _lock = new();
    private List<string> _acks = [];
    private List<string> _modifyIds = [];
    private List<int> _modifySeconds = [];
    private TaskCompletionSource<bool> _pendingDone = new();
    private bool _writing;
    private bool _closed;
    private bool _halfCloseWanted;
    private bool _broken;

    /// <summary>Acknowledges on the stream; <see langword="false"/> when the stream cannot carry it (send it unary).</summary>
    public Task<bool> AcknowledgeAsync(string ackId)
    {
        Task<bool> done;
        lock (_lock)
        {
            if (_closed)
            {
                return Task.FromResult(false);
            }
            _acks.Add(ackId);
            done = StartIfIdle();
        }
        return done;
    }

    /// <summary>Sets the ack deadline of <paramref name="ackIds"/> to <paramref name="seconds"/> (0 gives them back).</summary>
    public Task<bool> ModifyDeadlineAsync(IReadOnlyList<string> ackIds, int seconds)
    {
        Task<bool> done;
        lock (_lock)
        {
            if (_closed)
            {
                return Task.FromResult(false);
            }
            foreach (var ackId in ackIds)
            {
                _modifyIds.Add(ackId);
                _modifySeconds.Add(seconds);
            }
            done = StartIfIdle();
        }
        return done;
    }

    /// <summary>
    /// Half-closes the stream once the requests already accepted are written (a graceful stop: the service then stops
    /// sending and ends the stream). Later requests are answered <see langword="false"/>.
    /// </summary>
    public void HalfClose()
    {
        lock (_lock)
        {
            if (_closed)
            {
                return;
            }
            _closed = true;
            if (_writing)
            {
                _halfCloseWanted = true;
                return;
            }
            _writing = true;
        }
        _ = CompleteRequestsAsync();
    }

    /// <summary>The stream ended or was cut: nothing more is written, and what waits is answered <see langword="false"/>.</summary>
    public void Abandon()
    {
        TaskCompletionSource<bool>? waiting = null;
        lock (_lock)
        {
            _closed = true;
            _broken = true;
            if (!_writing && (_acks.Count > 0 || _modifyIds.Count > 0))
            {
                waiting = TakePending().Done;
            }
        }
        waiting?.TrySetResult(false);
    }

    // Under the lock.
    private Task<bool> StartIfIdle()
    {
        var done = _pendingDone.Task;
        if (!_writing)
        {
            _writing = true;
            _ = WriteLoopAsync();
        }
        return done;
    }

    // Under the lock.
    private (List<string> Acks, List<string> ModifyIds, List<int> ModifySeconds, TaskCompletionSource<bool> Done) TakePending()
    {
        var taken = (_acks, _modifyIds, _modifySeconds, _pendingDone);
        _acks = [];
        _modifyIds = [];
        _modifySeconds = [];
        _pendingDone = new TaskCompletionSource<bool>();
        return taken;
    }

    private async Task WriteLoopAsync()
    {
        // Leaves the caller's thread at once: the caller is a settle path and holds no lock here, but the first write
        // would otherwise run on it up to the network.
        await Task.Yield();
        while (true)
        {
            (List<string> Acks, List<string> ModifyIds, List<int> ModifySeconds, TaskCompletionSource<bool> Done) batch;
            bool broken;
            lock (_lock)
            {
                if (_acks.Count == 0 && _modifyIds.Count == 0)
                {
                    if (_halfCloseWanted && !_broken)
                    {
                        _halfCloseWanted = false;
                        break;
                    }
                    _writing = false;
                    return;
                }
                batch = TakePending();
                broken = _broken;
            }
            var written = !broken && await WriteAsync(batch.Acks, batch.ModifyIds, batch.ModifySeconds).ConfigureAwait(false);
            if (!written)
            {
                lock (_lock)
                {
                    _closed = true;
                    _broken = true;
                }
            }
            // Every waiter of the request resumes on one work item, rather than one each, and never on this loop.
            ThreadPool.UnsafeQueueUserWorkItem(static state => state.Done.TrySetResult(state.Written), (batch.Done, Written: written), preferLocal: false);
        }
        await CompleteRequestsAsync().ConfigureAwait(false);
    }

    private async Task<bool> WriteAsync(List<string> acks, List<string> modifyIds, List<int> modifySeconds)
    {
        try
        {
            for (var offset = 0; offset < acks.Count || offset < modifyIds.Count; offset += MaxIdsPerRequest)
            {
                var request = new StreamingPullRequest();
                if (offset < acks.Count)
                {
                    request.AckIds.AddRange(Slice(acks, offset));
                }
                if (offset < modifyIds.Count)
                {
                    request.ModifyDeadlineAckIds.AddRange(Slice(modifyIds, offset));
                    request.ModifyDeadlineSeconds.AddRange(Slice(modifySeconds, offset));
                }
                await requests.WriteAsync(request, streamKilled).ConfigureAwait(false);
            }
            return true;
        }
        catch (Exception ex) when (ex is RpcException or InvalidOperationException or OperationCanceledException or IOException)
        {
            // The stream is gone; the caller sends the same request unary.
            return false;
        }
    }

    private static IEnumerable<T> Slice<T>(List<T> items, int offset) =>
        offset == 0 && items.Count <= MaxIdsPerRequest ? items : items.Skip(offset).Take(MaxIdsPerRequest);

    private async Task CompleteRequestsAsync()
    {
        try
        {
            await requests.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is RpcException or InvalidOperationException or OperationCanceledException or IOException)
        {
            // The stream is already gone.
        }
    }
}
