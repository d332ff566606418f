using System.Threading.Channels;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;
using RabbitMQ.Client.Exceptions;

namespace Messaging.RabbitMQ;

/// <summary>One message to publish with a confirm.</summary>
internal readonly record struct OutgoingMessage(string Exchange, string RoutingKey, bool Mandatory, BasicProperties Properties, ReadOnlyMemory<byte> Body);

/// <summary>
/// Publishes with publisher confirms. Every caller's messages go into one queue drained by
/// <see cref="RabbitMqTransportOptions.PublisherChannels"/> loops, each owning one channel and keeping up to
/// <see cref="RabbitMqTransportOptions.MaxOutstandingConfirms"/> publishes unconfirmed (a sliding window). Concurrent
/// single-event publishes are therefore pipelined like a batch, and a channel is only ever used by its own loop.
/// While the connection recovers, failed publishes are retried until <see cref="RabbitMqTransportOptions.PublishTimeout"/>;
/// a message may then be stored twice, never zero times.
/// </summary>
internal sealed class RabbitMqPublisher : IAsyncDisposable
{
    private readonly RabbitMqConnections _connections;
    private readonly RabbitMqTransportOptions _options;
    private readonly Channel<PublishRequest> _queue = Channel.CreateUnbounded<PublishRequest>(new UnboundedChannelOptions { SingleReader = false });
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
        var deadline = DateTimeOffset.UtcNow + _options.PublishTimeout;
        IReadOnlyList<OutgoingMessage> pending = messages;
        while (true)
        {
            var requests = new PublishRequest[pending.Count];
            for (var i = 0; i < requests.Length; i++)
            {
                requests[i] = new PublishRequest(pending[i], cancellationToken);
                if (!_queue.Writer.TryWrite(requests[i]))
                {
                    throw new ObjectDisposedException(nameof(RabbitMqPublisher));
                }
            }
            var failed = new List<OutgoingMessage>();
            Exception? lastFailure = null;
            foreach (var request in requests)
            {
                try
                {
                    await request.Done.Task.ConfigureAwait(false);
                }
                catch (Exception ex) when (IsTransient(ex) && !cancellationToken.IsCancellationRequested)
                {
                    failed.Add(request.Message);
                    lastFailure = ex;
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    throw Explain(ex, request.Message);
                }
            }
            if (failed.Count == 0)
            {
                return;
            }
            if (DateTimeOffset.UtcNow >= deadline)
            {
                throw new TimeoutException(
                    $"RabbitMQ at {_connections.Endpoint} did not confirm {failed.Count} message(s) within Messaging:RabbitMQ:PublishTimeout ({_options.PublishTimeout}).", lastFailure);
            }
            await Task.Delay(TimeSpan.FromMilliseconds(200), cancellationToken).ConfigureAwait(false);
            pending = failed;
        }
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
        var window = new Queue<Task>(_options.MaxOutstandingConfirms);
        IChannel? channel = null;
        try
        {
            while (await reader.WaitToReadAsync(_disposed.Token).ConfigureAwait(false))
            {
                while (reader.TryRead(out var request))
                {
                    if (request.CancellationToken.IsCancellationRequested)
                    {
                        request.Done.TrySetCanceled(request.CancellationToken);
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
                        request.Done.TrySetException(ex);
                        continue;
                    }
                    while (window.Count >= _options.MaxOutstandingConfirms)
                    {
                        await window.Dequeue().ConfigureAwait(false);
                    }
                    window.Enqueue(PublishOneAsync(channel, request));
                    while (window.Count > 0 && window.Peek().IsCompleted)
                    {
                        _ = window.Dequeue();
                    }
                }
            }
        }
        catch (OperationCanceledException) when (_disposed.IsCancellationRequested)
        {
            // Disposing.
        }
        finally
        {
            await Task.WhenAll(window).ConfigureAwait(false);
            if (channel is not null)
            {
                await channel.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>Sends one message and completes its request when the broker confirms it. Never throws.</summary>
    private static async Task PublishOneAsync(IChannel channel, PublishRequest request)
    {
        try
        {
            var m = request.Message;
            await channel.BasicPublishAsync(m.Exchange, m.RoutingKey, m.Mandatory, m.Properties, m.Body, request.CancellationToken).ConfigureAwait(false);
            request.Done.TrySetResult();
        }
        catch (OperationCanceledException) when (request.CancellationToken.IsCancellationRequested)
        {
            request.Done.TrySetCanceled(request.CancellationToken);
        }
        catch (Exception ex)
        {
            request.Done.TrySetException(ex);
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

    private static bool IsTransient(Exception ex) => ex switch
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

    private sealed class PublishRequest(OutgoingMessage message, CancellationToken cancellationToken)
    {
        public OutgoingMessage Message { get; } = message;

        public CancellationToken CancellationToken { get; } = cancellationToken;

        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
