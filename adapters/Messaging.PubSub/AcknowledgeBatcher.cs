using Messaging.PubSub.Grpc;

namespace Messaging.PubSub;

/// <summary>
/// Acknowledges through unary Acknowledge calls, so a completed settlement means Pub/Sub accepted it, while sending one
/// call for many messages: the first ack goes out at once, and every ack that arrives while a call is in flight joins the
/// next one (group commit). An idle subscription therefore waits for no timer, and a busy one sends one call per round
/// trip instead of one per message.
/// </summary>
internal sealed class AcknowledgeBatcher(PubSubConnection connection, string subscription)
{
    /// <summary>Ack ids per call; Google's own clients send at most 2,500 and requests are limited to 512 KB.</summary>
    private const int MaxAckIdsPerCall = 1000;

    private readonly Lock _lock = new();
    private List<string> _pending = [];
    private TaskCompletionSource _pendingDone = NewCompletion();
    private bool _sending;

    /// <summary>Completes when Pub/Sub has accepted the acknowledgement; faults when the call failed after its retries.</summary>
    public Task AcknowledgeAsync(string ackId, CancellationToken cancellationToken)
    {
        Task done;
        var start = false;
        lock (_lock)
        {
            _pending.Add(ackId);
            done = _pendingDone.Task;
            if (!_sending)
            {
                _sending = start = true;
            }
        }
        if (start)
        {
            _ = SendLoopAsync();
        }
        return done.WaitAsync(cancellationToken);
    }

    private async Task SendLoopAsync()
    {
        while (true)
        {
            List<string> batch;
            TaskCompletionSource batchDone;
            lock (_lock)
            {
                if (_pending.Count == 0)
                {
                    _sending = false;
                    return;
                }
                batch = _pending;
                batchDone = _pendingDone;
                _pending = [];
                _pendingDone = NewCompletion();
            }
            try
            {
                foreach (var ackIds in batch.Chunk(MaxAckIdsPerCall))
                {
                    var request = new AcknowledgeRequest { Subscription = subscription };
                    request.AckIds.AddRange(ackIds);
                    await PubSubConnection.WithRetryAsync(o => connection.Subscriber.AcknowledgeAsync(request, o).ResponseAsync, CancellationToken.None)
                        .ConfigureAwait(false);
                }
                // Every waiter of the batch resumes on one work item, rather than one each, and never on this loop. The
                // waiters are the consumer's settle paths (application handlers have already returned), which never wait
                // on one another, so running them one after another cannot deadlock.
                ThreadPool.UnsafeQueueUserWorkItem(static done => done.TrySetResult(), batchDone, preferLocal: false);
            }
            catch (Exception ex)
            {
                ThreadPool.UnsafeQueueUserWorkItem(static state => state.Done.TrySetException(state.Error), (Done: batchDone, Error: ex), preferLocal: false);
            }
        }
    }

    private static TaskCompletionSource NewCompletion() => new();
}
