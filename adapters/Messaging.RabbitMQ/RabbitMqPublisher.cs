using System.Threading.Channels;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;
using RabbitMQ.Client.Exceptions;

namespace Messaging.RabbitMQ;

/// <summary>One message to publish with a confirm.</summary>
internal readonly record struct OutgoingMessage(string Exchange, string RoutingKey, bool Mandatory, BasicProperties Properties, ReadOnlyMemory<byte> Body);

/// <summary>
/// Publishes with publisher confirms on a small pool of channels. A batch is pipelined on one channel (all
/// publishes sent, then all confirms awaited). While the connection recovers, publishes are retried until
/// <see cref="RabbitMqTransportOptions.PublishTimeout"/>; a message may then be stored twice, never zero times.
/// </summary>
internal sealed class RabbitMqPublisher : IAsyncDisposable
{
    private readonly RabbitMqConnections _connections;
    private readonly RabbitMqTransportOptions _options;
    private readonly Channel<IChannel> _idle;
    private readonly SemaphoreSlim _slots;

    public RabbitMqPublisher(RabbitMqConnections connections, RabbitMqTransportOptions options)
    {
        _connections = connections;
        _options = options;
        _idle = Channel.CreateUnbounded<IChannel>();
        _slots = new SemaphoreSlim(options.PublisherChannels, options.PublisherChannels);
    }

    public async Task PublishAsync(IReadOnlyList<OutgoingMessage> messages, CancellationToken cancellationToken)
    {
        var deadline = DateTimeOffset.UtcNow + _options.PublishTimeout;
        IReadOnlyList<OutgoingMessage> pending = messages;
        while (true)
        {
            Exception? failure;
            (pending, failure) = await TryPublishAsync(pending, cancellationToken).ConfigureAwait(false);
            if (pending.Count == 0)
            {
                return;
            }
            if (DateTimeOffset.UtcNow >= deadline)
            {
                throw new TimeoutException(
                    $"RabbitMQ at {_connections.Endpoint} did not confirm {pending.Count} message(s) within Messaging:RabbitMQ:PublishTimeout ({_options.PublishTimeout}).", failure);
            }
            await Task.Delay(TimeSpan.FromMilliseconds(200), cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task<(IReadOnlyList<OutgoingMessage> Failed, Exception? Failure)> TryPublishAsync(IReadOnlyList<OutgoingMessage> messages, CancellationToken cancellationToken)
    {
        await _slots.WaitAsync(cancellationToken).ConfigureAwait(false);
        IChannel? channel = null;
        try
        {
            try
            {
                channel = await RentAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (IsTransient(ex))
            {
                return (messages, ex);
            }
            var confirms = new Task[messages.Count];
            for (var i = 0; i < messages.Count; i++)
            {
                var m = messages[i];
                try
                {
                    confirms[i] = channel.BasicPublishAsync(m.Exchange, m.RoutingKey, m.Mandatory, m.Properties, m.Body, cancellationToken).AsTask();
                }
                catch (Exception ex)
                {
                    confirms[i] = Task.FromException(ex);
                }
            }
            try
            {
                await Task.WhenAll(confirms).ConfigureAwait(false);
                return ([], null);
            }
            catch (Exception)
            {
                // Inspect each publish below.
            }
            var failed = new List<OutgoingMessage>();
            Exception? last = null;
            for (var i = 0; i < confirms.Length; i++)
            {
                if (confirms[i].Exception?.GetBaseException() is not { } ex)
                {
                    if (confirms[i].IsCanceled)
                    {
                        cancellationToken.ThrowIfCancellationRequested();
                        failed.Add(messages[i]);
                    }
                    continue;
                }
                if (!IsTransient(ex))
                {
                    throw Explain(ex, messages[i]);
                }
                failed.Add(messages[i]);
                last = ex;
            }
            return (failed, last);
        }
        finally
        {
            if (channel is not null)
            {
                await ReturnAsync(channel).ConfigureAwait(false);
            }
            _slots.Release();
        }
    }

    private async Task<IChannel> RentAsync(CancellationToken cancellationToken)
    {
        while (_idle.Reader.TryRead(out var idle))
        {
            if (!idle.IsClosed || idle.CloseReason?.Initiator != ShutdownInitiator.Peer || idle.CloseReason.ReplyCode == 320)
            {
                return idle;
            }
            await idle.DisposeAsync().ConfigureAwait(false);
        }
        var connection = await _connections.PublishingAsync(cancellationToken).ConfigureAwait(false);
        return await connection.CreateChannelAsync(new CreateChannelOptions(
            publisherConfirmationsEnabled: true,
            publisherConfirmationTrackingEnabled: true,
            outstandingPublisherConfirmationsRateLimiter: new ThrottlingRateLimiter(_options.MaxOutstandingConfirms)), cancellationToken).ConfigureAwait(false);
    }

    private async ValueTask ReturnAsync(IChannel channel)
    {
        // A channel closed by a channel-level error (e.g. 404) is never recovered: replace it. One closed because the
        // connection dropped comes back with the connection.
        if (channel.IsClosed && channel.CloseReason?.ReplyCode is not (320 or 0) && channel.CloseReason?.Initiator == ShutdownInitiator.Peer)
        {
            await channel.DisposeAsync().ConfigureAwait(false);
            return;
        }
        _idle.Writer.TryWrite(channel);
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
        _idle.Writer.TryComplete();
        while (_idle.Reader.TryRead(out var channel))
        {
            await channel.DisposeAsync().ConfigureAwait(false);
        }
        _slots.Dispose();
    }
}
