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
/// </summary>
internal sealed class TopicPublisher : IAsyncDisposable
{
    private readonly PubSubConnection _connection;
    private readonly PubSubTransportOptions _options;
    private readonly TimeProvider _time;
    private readonly Channel<Pending> _queue = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private readonly SemaphoreSlim _requestSlots = new(MaxRequestsInFlight, MaxRequestsInFlight);
    private readonly Dictionary<string, Task> _keyTails = new(StringComparer.Ordinal); // touched by the loop only

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

    /// <summary>Queues messages in order; the task completes once Pub/Sub has accepted every one of them.</summary>
    public Task PublishAsync(IReadOnlyList<PubsubMessage> messages, CancellationToken cancellationToken)
    {
        if (messages.Count == 0)
        {
            return Task.CompletedTask;
        }
        var call = new CallCompletion(messages.Count);
        foreach (var message in messages)
        {
            if (!_queue.Writer.TryWrite(new Pending(message, PubSubCodec.SizeOf(message) + 64, call)))
            {
                throw new ObjectDisposedException(nameof(PubSubTransport));
            }
        }
        // The caller may stop waiting; the messages may still be published (at-least-once, never half a message).
        return call.Task.WaitAsync(cancellationToken);
    }

    private async Task LoopAsync()
    {
        var reader = _queue.Reader;
        while (await reader.WaitToReadAsync(CancellationToken.None).ConfigureAwait(false))
        {
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
                await _requestSlots.WaitAsync(CancellationToken.None).ConfigureAwait(false);
                _ = SendAndReleaseAsync(batch.Items);
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
            _requestSlots.Release();
        }
    }

    private void Fill(ChannelReader<Pending> reader, Batch batch)
    {
        while (!batch.IsFull(_options) && reader.TryPeek(out var next))
        {
            if (batch.Items.Count > 0 && batch.Bytes + next.Size > _options.MaxBatchBytes)
            {
                batch.Closed = true;
                return;
            }
            reader.TryRead(out _);
            batch.Items.Add(next);
            batch.Bytes += next.Size;
        }
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

    private async Task SendGroupAsync(List<Pending> group)
    {
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
            foreach (var item in group)
            {
                item.Call.Failed(error);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
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

    /// <summary>The outcome of one caller's messages: accepted when the last is accepted, failed at the first failure.</summary>
    private sealed class CallCompletion(int count)
    {
        private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _remaining = count;

        public Task Task => _done.Task;

        public void Accepted()
        {
            if (Interlocked.Decrement(ref _remaining) == 0)
            {
                _done.TrySetResult();
            }
        }

        public void Failed(Exception error) => _done.TrySetException(error);
    }

    private sealed class Batch
    {
        public List<Pending> Items { get; } = [];

        public long Bytes { get; set; }

        public bool Closed { get; set; }

        public bool IsFull(PubSubTransportOptions options) => Closed || Items.Count >= options.MaxBatchCount || Bytes >= options.MaxBatchBytes;
    }
}
