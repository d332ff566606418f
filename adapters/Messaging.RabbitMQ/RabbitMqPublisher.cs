using System.Threading.Channels;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;
using RabbitMQ.Client.Exceptions;

namespace Messaging.RabbitMQ;

/// <summary>One message to publish with a confirm.</summary>
internal readonly record struct OutgoingMessage(string Exchange, string RoutingKey, bool Mandatory, BasicProperties Properties, ReadOnlyMemory<byte> Body);

/// <summary>
/// Publishes with publisher confirms. A caller's messages are split into at most
/// <see cref="RabbitMqTransportOptions.PublisherChannels"/> chunks that go into one queue drained by as many loops, each
/// owning one channel and keeping up to <see cref="RabbitMqTransportOptions.MaxOutstandingConfirms"/> publishes
/// unconfirmed (a sliding window). Per message there is only the client's own confirm; a chunk completes once, when its
/// last message is confirmed. A loop drains its window whenever the queue runs dry, so concurrent single-event
/// publishes that arrive meanwhile are sent together on the next pass (group commit), and a channel is only ever used
/// by its own loop. While the connection recovers, failed publishes are retried until
/// <see cref="RabbitMqTransportOptions.PublishTimeout"/>; a message may then be stored twice, never zero times.
/// </summary>
internal sealed class RabbitMqPublisher : IAsyncDisposable
{
    private readonly RabbitMqConnections _connections;
    private readonly RabbitMqTransportOptions _options;
    private readonly Channel<PublishChunk> _queue = Channel.CreateUnbounded<PublishChunk>(new UnboundedChannelOptions { SingleReader = false });
    private readonly CancellationTokenSource _disposed = new();
    private readonly Lock _startLock = new();
    private Task[]? _loops;

    public RabbitMqPublisher(RabbitMqConnections connections, RabbitMqTransportOptions options)
    {
        _connections = connections;
        _options = options;
    }

    public async Task PublishAsync(IReadOnlyList<OutgoingMessage> messages, CancellationToken cancellationToken)
    {
        EnsureStarted();
        // One token for the caller's cancellation and the publish timeout: the loops drop what it cancels before sending it,
        // and a publish already sent stops waiting for its confirm (a broker that blocks publishers never sends one).
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(_options.PublishTimeout);
        var token = deadline.Token;
        IReadOnlyList<OutgoingMessage> pending = messages;
        Exception? lastFailure = null;
        try
        {
            while (true)
            {
                var chunks = Split(pending, token);
                foreach (var chunk in chunks)
                {
                    if (!_queue.Writer.TryWrite(chunk))
                    {
                        throw new ObjectDisposedException(nameof(RabbitMqPublisher));
                    }
                }
                List<OutgoingMessage>? failed = null;
                foreach (var chunk in chunks)
                {
                    await chunk.Done.Task.WaitAsync(token).ConfigureAwait(false);
                    token.ThrowIfCancellationRequested();
                    if (chunk.Fatal is { } fatal)
                    {
                        throw Explain(fatal.Exception, fatal.Message);
                    }
                    if (chunk.Failed is { } chunkFailed)
                    {
                        (failed ??= []).AddRange(chunkFailed);
                        lastFailure = chunk.LastFailure;
                    }
                }
                if (failed is null)
                {
                    return;
                }
                await Task.Delay(TimeSpan.FromMilliseconds(200), token).ConfigureAwait(false);
                pending = failed;
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && deadline.IsCancellationRequested)
        {
            var blocked = _connections.BlockedReason is { } reason ? $" The broker is blocking publishers: {reason}." : string.Empty;
            throw new TimeoutException(
                $"RabbitMQ at {_connections.Endpoint} did not confirm {pending.Count} message(s) within Messaging:RabbitMQ:PublishTimeout ({_options.PublishTimeout}).{blocked} " +
                "They may still be stored once the broker accepts them.", lastFailure);
        }
        finally
        {
            // Whatever of this call is still queued (after a failure elsewhere in it) is dropped, not sent later.
            await deadline.CancelAsync().ConfigureAwait(false);
        }
    }

    /// <summary>One chunk per loop at most, so a large batch is spread over every channel.</summary>
    private PublishChunk[] Split(IReadOnlyList<OutgoingMessage> messages, CancellationToken cancellationToken)
    {
        var loops = Math.Min(messages.Count, _options.PublisherChannels);
        if (loops == 0)
        {
            return [];
        }
        var size = (messages.Count + loops - 1) / loops;
        // As many chunks as it takes at that size: 5 messages over 4 loops are 3 chunks of 2, 2 and 1, never an empty
        // fourth one, which would never complete.
        var count = (messages.Count + size - 1) / size;
        var chunks = new PublishChunk[count];
        for (var i = 0; i < count; i++)
        {
            var offset = i * size;
            chunks[i] = new PublishChunk(messages, offset, Math.Min(size, messages.Count - offset), cancellationToken);
        }
        return chunks;
    }

    private void EnsureStarted()
    {
        if (_loops is not null)
        {
            return;
        }
        lock (_startLock)
        {
            _loops ??= Enumerable.Range(0, _options.PublisherChannels).Select(_ => Task.Run(PublishLoopAsync)).ToArray();
        }
    }

    private async Task PublishLoopAsync()
    {
        var reader = _queue.Reader;
        var window = new Queue<InFlight>(_options.MaxOutstandingConfirms);
        IChannel? channel = null;
        try
        {
            while (await reader.WaitToReadAsync(_disposed.Token).ConfigureAwait(false))
            {
                while (reader.TryRead(out var chunk))
                {
                    for (var i = chunk.Offset; i < chunk.Offset + chunk.Count; i++)
                    {
                        if (chunk.CancellationToken.IsCancellationRequested)
                        {
                            chunk.Settle(); // the caller sees the cancellation itself
                            continue;
                        }
                        try
                        {
                            if (channel is null || NeedsReplacing(channel))
                            {
                                channel = await ReplaceChannelAsync(channel).ConfigureAwait(false);
                            }
                        }
                        catch (Exception ex)
                        {
                            chunk.Fail(chunk.Messages[i], ex, IsTransient(ex));
                            continue;
                        }
                        while (window.Count >= _options.MaxOutstandingConfirms)
                        {
                            await window.Dequeue().CompleteAsync().ConfigureAwait(false);
                        }
                        var m = chunk.Messages[i];
                        window.Enqueue(new InFlight(chunk, i, Send(channel, m, chunk.CancellationToken)));
                    }
                }
                // Nothing else queued: settle outstanding confirms, oldest first, so every chunk completes, but go back to
                // sending as soon as more is queued: callers that publish one event at a time keep the window full.
                while (window.Count > 0 && !reader.TryPeek(out _))
                {
                    await window.Dequeue().CompleteAsync().ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (_disposed.IsCancellationRequested)
        {
            // Disposing.
        }
        finally
        {
            while (window.Count > 0)
            {
                await window.Dequeue().CompleteAsync().ConfigureAwait(false);
            }
            if (channel is not null)
            {
                await channel.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>Starts one publish; a synchronous failure becomes a faulted task, so it is settled like any other.</summary>
    private static ValueTask Send(IChannel channel, in OutgoingMessage m, CancellationToken cancellationToken)
    {
        try
        {
            return channel.BasicPublishAsync(m.Exchange, m.RoutingKey, m.Mandatory, m.Properties, m.Body, cancellationToken);
        }
        catch (Exception ex)
        {
            return ValueTask.FromException(ex);
        }
    }

    /// <summary>
    /// A channel closed by a channel-level error (e.g. 404) is never recovered: replace it. One closed because the
    /// connection dropped comes back with the connection (automatic recovery), so keep it.
    /// </summary>
    private static bool NeedsReplacing(IChannel channel) => channel.IsClosed && IsChannelError(channel.CloseReason);

    private async Task<IChannel> ReplaceChannelAsync(IChannel? channel)
    {
        if (channel is not null)
        {
            await channel.DisposeAsync().ConfigureAwait(false);
        }
        var connection = await _connections.PublishingAsync(_disposed.Token).ConfigureAwait(false);
        return await connection.CreateChannelAsync(new CreateChannelOptions(
            publisherConfirmationsEnabled: true,
            publisherConfirmationTrackingEnabled: true,
            // Our own window keeps at most this many unconfirmed; the client's limiter is only a backstop. Throttling is off
            // (percentage 0): the client's default delays publishes by up to a second once half the window is in use.
            outstandingPublisherConfirmationsRateLimiter: new ThrottlingRateLimiter(_options.MaxOutstandingConfirms, throttlingPercentage: 0)), _disposed.Token).ConfigureAwait(false);
    }

    internal static bool IsTransient(Exception ex) => ex switch
    {
        PublishException { IsReturn: false } => true, // nack: the broker could not store it; try again
        AlreadyClosedException closed => !IsChannelError(closed.ShutdownReason),
        OperationInterruptedException interrupted => !IsChannelError(interrupted.ShutdownReason),
        BrokerUnreachableException or IOException or ObjectDisposedException => true,
        _ => false,
    };

    private static bool IsChannelError(ShutdownEventArgs? reason) =>
        reason is { Initiator: ShutdownInitiator.Peer, ReplyCode: 404 or 403 or 406 };

    private static Exception Explain(Exception ex, OutgoingMessage message) => ex switch
    {
        PublishException { IsReturn: true } => new InvalidOperationException(
            $"RabbitMQ returned a message as unroutable: no queue '{message.RoutingKey}' exists. Provision the topology (Messaging:Provisioning) or create it.", ex),
        AlreadyClosedException { ShutdownReason.ReplyCode: 404 } or OperationInterruptedException { ShutdownReason.ReplyCode: 404 } =>
            new InvalidOperationException($"RabbitMQ exchange '{message.Exchange}' does not exist. Provision the topology (Messaging:Provisioning) or declare the topic.", ex),
        _ => ex,
    };

    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _disposed.CancelAsync().ConfigureAwait(false);
        if (_loops is not null)
        {
            await Task.WhenAll(_loops).ConfigureAwait(false);
        }
        while (_queue.Reader.TryRead(out var request))
        {
            request.Done.TrySetException(new ObjectDisposedException(nameof(RabbitMqPublisher)));
        }
        _disposed.Dispose();
    }

    /// <summary>A publish whose confirm is outstanding.</summary>
    private readonly record struct InFlight(PublishChunk Chunk, int Index, ValueTask Confirm)
    {
        /// <summary>Waits for the confirm and records the outcome in the chunk. Never throws.</summary>
        public async ValueTask CompleteAsync()
        {
            try
            {
                await Confirm.ConfigureAwait(false);
                Chunk.Settle();
            }
            catch (OperationCanceledException) when (Chunk.CancellationToken.IsCancellationRequested)
            {
                Chunk.Settle();
            }
            catch (Exception ex)
            {
                Chunk.Fail(Chunk.Messages[Index], ex, IsTransient(ex));
            }
        }
    }

    /// <summary>
    /// Consecutive messages of one caller, published by one loop. Only that loop writes to it; the caller reads it after
    /// <see cref="Done"/> completes.
    /// </summary>
    private sealed class PublishChunk(IReadOnlyList<OutgoingMessage> messages, int offset, int count, CancellationToken cancellationToken)
    {
        private int _unsettled = count;

        public IReadOnlyList<OutgoingMessage> Messages { get; } = messages;

        public int Offset { get; } = offset;

        public int Count { get; } = count;

        public CancellationToken CancellationToken { get; } = cancellationToken;

        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Messages worth publishing again (nacked, or lost with the connection).</summary>
        public List<OutgoingMessage>? Failed { get; private set; }

        public Exception? LastFailure { get; private set; }

        /// <summary>The first failure that publishing again cannot fix.</summary>
        public (Exception Exception, OutgoingMessage Message)? Fatal { get; private set; }

        public void Settle()
        {
            if (--_unsettled == 0)
            {
                Done.TrySetResult();
            }
        }

        public void Fail(OutgoingMessage message, Exception exception, bool transient)
        {
            if (transient)
            {
                (Failed ??= []).Add(message);
                LastFailure = exception;
            }
            else
            {
                Fatal ??= (exception, message);
            }
            Settle();
        }
    }
}
