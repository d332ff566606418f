using System.Collections.Concurrent;
using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Transport;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace Messaging.RabbitMQ;

/// <summary>
/// RabbitMQ's receive loop for one subscription: a consumer on the subscription's quorum queue, with the broker's prefetch
/// window as flow control, and acknowledgements batched (<see cref="RabbitMqAckBatcher"/>). Everything between receiving
/// and settling is the <see cref="ReceivePipeline"/>'s.
/// </summary>
internal sealed partial class RabbitMqReceiver : ITransportReceiver
{
    /// <summary>How long handled deliveries may wait behind a slower one before they are acknowledged one by one.</summary>
    internal static readonly TimeSpan AckLinger = TimeSpan.FromMilliseconds(100);

    private static readonly TimeSpan DisposeFlushTimeout = TimeSpan.FromSeconds(5);
    private readonly RabbitMqTransport _transport;
    private readonly ReceivePipeline _pipeline;
    private readonly ILogger _logger;
    private readonly string _subscription;
    private readonly string _queue;
    private readonly ConcurrentDictionary<TimeSpan, Task> _retryQueues = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Session> _retired = [];
    private volatile Session? _session;
    private int _resubscribing;
    private int _disposed;

    /// <summary>
    /// Set when an ordered subscription's consumer stops or goes away: what it did not settle stays unacknowledged, and the
    /// broker requeues all of it, in queue order, when the channel closes. A cancel or a nack would let the single active
    /// consumer that takes over receive later messages of a key before the ones given back (RabbitMQ activates the next
    /// consumer as soon as the active one cancels).
    /// </summary>
    private volatile bool _leaveUnackedForClose;

    public RabbitMqReceiver(RabbitMqTransport transport, ReceivePipeline pipeline, ILogger logger)
    {
        _transport = transport;
        _pipeline = pipeline;
        _logger = logger;
        _subscription = pipeline.Subscription.Name;
        _queue = RabbitMqNames.Queue(_subscription);
    }

    /// <summary>Prefetched deliveries go back with a nack: handling them would keep a stopping consumer busy for a whole window.</summary>
    public StopBehavior StopBehavior => StopBehavior.ReturnUnstarted;

    /// <summary>The broker holds an unacknowledged delivery for as long as the channel is open.</summary>
    public TimeSpan? LeaseRenewalInterval => null;

    /// <summary>Deliveries have no lease to renew, but lose it with their channel: their handlers are then cancelled.</summary>
    public bool ReportsLostLeases => true;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        try
        {
            _session = await OpenSessionAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (global::RabbitMQ.Client.Exceptions.OperationInterruptedException ex) when (ex.ShutdownReason?.ReplyCode == 404)
        {
            throw new InvalidOperationException($"RabbitMQ queue '{_queue}' for subscription '{_subscription}' does not exist. Enable Messaging:Provisioning or create it.", ex);
        }
    }

    /// <summary>A channel with its prefetch window, its acknowledgement batcher and a consumer on the subscription's queue.</summary>
    private async Task<Session> OpenSessionAsync(CancellationToken cancellationToken)
    {
        var subscription = _pipeline.Subscription;
        var connection = await _transport.Connections.ConsumingAsync(cancellationToken).ConfigureAwait(false);
        var channel = await connection.CreateChannelAsync(new CreateChannelOptions(
            publisherConfirmationsEnabled: false,
            publisherConfirmationTrackingEnabled: false,
            consumerDispatchConcurrency: 1), cancellationToken).ConfigureAwait(false);
        try
        {
            var window = (ushort)Math.Clamp(Math.Max(subscription.Prefetch, subscription.Concurrency), 1, ushort.MaxValue);
            await channel.BasicQosAsync(0, window, global: false, cancellationToken).ConfigureAwait(false);
            var acks = new RabbitMqAckBatcher(
                (tag, multiple) => channel.BasicAckAsync(tag, multiple, CancellationToken.None),
                ex => LogAckFailed(_subscription, ex.Message),
                individualThreshold: Math.Max(1, window / 4),
                linger: AckLinger);
            var session = new Session(connection, channel, acks);
            var consumer = new AsyncEventingBasicConsumer(channel);
            consumer.ReceivedAsync += (_, args) => OnReceivedAsync(session, args);
            // A consumer the broker cancels (its queue was deleted, consumer_timeout) or a channel it closes is not recovered
            // by the client, unlike a lost connection: without this the subscription would silently consume nothing.
            consumer.UnregisteredAsync += (_, _) => OnConsumerLostAsync(session, "the broker cancelled the consumer (was the queue deleted?)");
            // A delivery's lease is the channel it came on: once the channel is closed (the broker closed it, or the connection
            // was lost) the broker gives its unacknowledged deliveries to other consumers, and an ack sent later on a recovered
            // channel would carry a stale tag. Their handlers are cancelled, not left running.
            channel.ChannelShutdownAsync += (_, args) =>
            {
                _pipeline.ReportLeasesLost(m => m is Message delivered && delivered.Session == session, $"the channel closed: {args.ReplyCode} {args.ReplyText}");
                return Task.CompletedTask;
            };
            consumer.ShutdownAsync += (_, args) => OnConsumerLostAsync(session, $"the channel was closed: {args.ReplyCode} {args.ReplyText}");
            session.ConsumerTag = await channel.BasicConsumeAsync(_queue, autoAck: false, consumer, cancellationToken).ConfigureAwait(false);
            return session;
        }
        catch
        {
            await QuietlyAsync(() => channel.AbortAsync(CancellationToken.None)).ConfigureAwait(false);
            channel.Dispose();
            throw;
        }
    }

    private Task OnConsumerLostAsync(Session session, string reason)
    {
        // Our own cancel (stop) clears the tag first; a lost connection is recovered by the client with its consumers.
        if (_stop.IsCancellationRequested || session != _session || session.ConsumerTag is null || !session.Connection.IsOpen)
        {
            return Task.CompletedTask;
        }
        if (Interlocked.Exchange(ref _resubscribing, 1) == 0)
        {
            LogConsumerLost(_subscription, reason);
            _pipeline.ReportReceiveFailing($"the consumer was lost: {reason}");
            _ = ResubscribeAsync(session);
        }
        return Task.CompletedTask;
    }

    /// <summary>Consumes again on a new channel, with a bounded backoff, until it works or the receiver stops.</summary>
    private async Task ResubscribeAsync(Session lost)
    {
        lock (_retired)
        {
            _retired.Add(lost); // its deliveries still settle on it while its channel lives
        }
        var delay = TimeSpan.FromMilliseconds(500);
        var failures = 0;
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                try
                {
                    await Task.Delay(delay, _pipeline.Time, _stop.Token).ConfigureAwait(false);
                    _session = await OpenSessionAsync(_stop.Token).ConfigureAwait(false);
                    LogConsumerResumed(_subscription, failures + 1);
                    _pipeline.ReportReceiveRecovered();
                    return;
                }
                catch (OperationCanceledException) when (_stop.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception ex)
                {
                    failures++;
                    _pipeline.ReportReceiveFailing($"cannot consume again ({failures} attempt(s)): {ex.Message}");
                    if (failures % 10 == 1)
                    {
                        LogResubscribeFailed(_subscription, failures, ex.Message);
                    }
                    delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(5).Ticks));
                }
            }
        }
        finally
        {
            Volatile.Write(ref _resubscribing, 0);
        }
    }

    private Task OnReceivedAsync(Session session, BasicDeliverEventArgs args)
    {
        var slot = session.Acks.Track(args.DeliveryTag);
        // The client's body buffer is only valid during this callback. The copy is overwritten whole, so it need not be zeroed first.
        var body = GC.AllocateUninitializedArray<byte>(args.Body.Length);
        args.Body.Span.CopyTo(body);
        // A handler that completes synchronously runs on this thread and never leaves it: the pipeline never blocks here.
        _pipeline.Submit(new Message(this, session, slot, args.BasicProperties, body, args.Redelivered));
        return Task.CompletedTask;
    }

    /// <summary>Returns a delivery to the queue with a frame of its own, before any multiple-ack can pass over it.</summary>
    private static async Task NackAsync(Session session, RabbitMqAckBatcher.Slot slot)
    {
        try
        {
            await session.Channel.BasicNackAsync(slot.Tag, multiple: false, requeue: true, CancellationToken.None).ConfigureAwait(false);
        }
        finally
        {
            session.Acks.SettledElsewhere(slot);
        }
    }

    /// <summary>Declares the TTL queue of one retry delay on first use; a failed declaration is not remembered, so the next retry tries again.</summary>
    private async Task EnsureRetryQueueAsync(TimeSpan delay, CancellationToken cancellationToken)
    {
        var declaration = _retryQueues.GetOrAdd(delay, DeclareRetryQueueAsync);
        try
        {
            await declaration.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception) when (declaration.IsFaulted || declaration.IsCanceled)
        {
            _retryQueues.TryRemove(new KeyValuePair<TimeSpan, Task>(delay, declaration));
            throw;
        }
    }

    private async Task DeclareRetryQueueAsync(TimeSpan delay)
    {
        using var timeout = new CancellationTokenSource(_transport.Options.PublishTimeout);
        var connection = await _transport.Connections.PublishingAsync(timeout.Token).ConfigureAwait(false);
        var channel = await connection.CreateChannelAsync(cancellationToken: timeout.Token).ConfigureAwait(false);
        try
        {
            await channel.QueueDeclareAsync(RabbitMqNames.RetryQueue(_subscription, delay), durable: true, exclusive: false, autoDelete: false, arguments: new Dictionary<string, object?>
            {
                ["x-queue-type"] = "quorum",
                ["x-message-ttl"] = (long)delay.TotalMilliseconds,
                ["x-dead-letter-exchange"] = string.Empty,
                ["x-dead-letter-routing-key"] = _queue,
                // At-least-once dead-lettering (quorum queues, RabbitMQ 3.10+): a retry is never lost in transit.
                ["x-dead-letter-strategy"] = "at-least-once",
                ["x-overflow"] = "reject-publish",
            }, cancellationToken: timeout.Token).ConfigureAwait(false);
        }
        finally
        {
            await channel.AbortAsync(CancellationToken.None).ConfigureAwait(false);
            channel.Dispose();
        }
    }

    public Task RenewLeasesAsync(IReadOnlyList<ReceivedMessage> messages, CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StopReceivingAsync(CancellationToken cancellationToken)
    {
        if (_pipeline.Subscription.Ordered)
        {
            // No cancel: the consumer stays the active one until its channel closes (see _leaveUnackedForClose).
            _leaveUnackedForClose = true;
            if (!_stop.IsCancellationRequested)
            {
                await _stop.CancelAsync().ConfigureAwait(false);
            }
            return;
        }
        if (!_stop.IsCancellationRequested)
        {
            await _stop.CancelAsync().ConfigureAwait(false);
        }
        if (_session is { } session && session.Channel.IsOpen && Interlocked.Exchange(ref session.ConsumerTag, null) is { } tag)
        {
            await QuietlyAsync(() => session.Channel.BasicCancelAsync(tag, noWait: false, cancellationToken)).ConfigureAwait(false);
        }
    }

    public async Task DrainedAsync(CancellationToken cancellationToken)
    {
        foreach (var session in Sessions())
        {
            try
            {
                await session.Acks.FlushAsync().WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Out of time: what is not acknowledged returns to the queue with the channel.
            }
        }
    }

    private List<Session> Sessions()
    {
        lock (_retired)
        {
            var sessions = new List<Session>(_retired);
            if (_session is { } current && !sessions.Contains(current))
            {
                sessions.Add(current);
            }
            return sessions;
        }
    }

    /// <summary>Like a dropped connection: consuming stops, the pipeline gives back what is unsettled, handled deliveries are acknowledged if the channel lets us, the channel closes.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }
        _transport.Forget(this);
        // Cancel the consumer first: a delivery given back to a channel that still consumes comes straight back, and each
        // return counts as a delivery attempt.
        using (var cancelTimeout = new CancellationTokenSource(DisposeFlushTimeout))
        {
            await StopReceivingAsync(cancelTimeout.Token).ConfigureAwait(false);
        }
        await _pipeline.AbortAsync().ConfigureAwait(false);
        foreach (var session in Sessions())
        {
            try
            {
                // Handled deliveries are acknowledged even when the consumer goes away without a stop, if the channel lets us.
                await session.Acks.FlushAsync().WaitAsync(DisposeFlushTimeout).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                // They return to the queue with the channel.
            }
            await session.Acks.DisposeAsync().ConfigureAwait(false);
            await QuietlyAsync(() => session.Channel.CloseAsync()).ConfigureAwait(false);
            await session.Channel.DisposeAsync().ConfigureAwait(false);
        }
    }

    private async Task QuietlyAsync(Func<Task> action)
    {
        try
        {
            await action().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is global::RabbitMQ.Client.Exceptions.AlreadyClosedException or global::RabbitMQ.Client.Exceptions.OperationInterruptedException
                                       or ObjectDisposedException or IOException or OperationCanceledException)
        {
            LogChannelGone(_subscription, ex.Message);
        }
    }

    /// <summary>One delivery: its wire mapping and settlement primitives.</summary>
    private sealed class Message(RabbitMqReceiver owner, Session session, RabbitMqAckBatcher.Slot slot, IReadOnlyBasicProperties properties, byte[] body, bool redelivered)
        : ReceivedMessage
    {
        public override string? MessageId => properties.MessageId;

        public Session Session => session;

        /// <summary>Attempts before this copy (carried by retry copies) + returns of this copy counted by the quorum queue + this one.</summary>
        protected override int ReadAttempt()
        {
            var headers = properties.Headers;
            var prior = headers is not null && headers.TryGetValue(RabbitMqNames.PriorAttemptsHeader, out var p) ? RabbitMqMessageCopy.Count(p) : null;
            var returns = headers is not null && headers.TryGetValue(RabbitMqNames.DeliveryCountHeader, out var d) ? RabbitMqMessageCopy.Count(d) : null;
            return DeliveryAttempt.FromWire(prior, (returns ?? (redelivered ? 1 : 0)) + 1L);
        }

        protected override CloudEvent Decode() => owner._transport.Codec.Decode(properties, body, bodyIsOwned: true);

        protected override Task CompleteAsync(CancellationToken cancellationToken)
        {
            // The frame goes out with the channel's next batch. If the channel was recovered meanwhile, the tag is
            // stale: the client drops the ack and the broker redelivers.
            session.Acks.Ack(slot);
            return Task.CompletedTask;
        }

        protected override async Task RetryAsync(TimeSpan delay, CancellationToken cancellationToken)
        {
            var target = owner._queue;
            if (delay > TimeSpan.Zero)
            {
                await owner.EnsureRetryQueueAsync(delay, cancellationToken).ConfigureAwait(false);
                target = RabbitMqNames.RetryQueue(owner._subscription, delay);
            }
            var headers = RabbitMqMessageCopy.Headers(properties, [new(RabbitMqNames.PriorAttemptsHeader, Attempt)]);
            // Publish the copy (confirmed) before acknowledging the original: a crash in between duplicates, never loses.
            await owner._transport.Publisher.PublishAsync(
                [new OutgoingMessage(string.Empty, target, Mandatory: true, RabbitMqMessageCopy.Properties(properties, headers), body)], cancellationToken).ConfigureAwait(false);
            session.Acks.Ack(slot);
        }

        protected override async Task DeadLetterAsync(DeadLetterMetadata metadata, CancellationToken cancellationToken)
        {
            var extra = metadata.ToProperties().Select(p => new KeyValuePair<string, object?>(p.Key, p.Value)).ToList();
            extra.Add(new(RabbitMqNames.DeadLetterIdHeader, Guid.NewGuid().ToString("N")));
            extra.Add(new(RabbitMqNames.PriorAttemptsHeader, Attempt));
            var headers = RabbitMqMessageCopy.Headers(properties, extra);
            await owner._transport.Publisher.PublishAsync(
                [new OutgoingMessage(string.Empty, RabbitMqNames.DeadLetterQueue(owner._subscription), Mandatory: true, RabbitMqMessageCopy.Properties(properties, headers), body)],
                cancellationToken).ConfigureAwait(false);
            session.Acks.Ack(slot);
        }

        protected override Task ReturnAsync(CancellationToken cancellationToken) =>
            owner._leaveUnackedForClose ? Task.CompletedTask : NackAsync(session, slot);
    }

    /// <summary>One channel consuming the queue; a new one replaces it when the broker cancels the consumer or closes the channel.</summary>
    private sealed class Session(IConnection connection, IChannel channel, RabbitMqAckBatcher acks)
    {
        public string? ConsumerTag;

        public IConnection Connection => connection;

        public IChannel Channel => channel;

        public RabbitMqAckBatcher Acks => acks;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Subscription {Subscription} stopped consuming: {Reason}; consuming again on a new channel")]
    private partial void LogConsumerLost(string subscription, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Subscription {Subscription} consumes again (attempt {Attempt})")]
    private partial void LogConsumerResumed(string subscription, int attempt);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Subscription {Subscription} cannot consume yet ({Failures} attempt(s)): {Reason}; still trying")]
    private partial void LogResubscribeFailed(string subscription, int failures, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Could not acknowledge deliveries of subscription {Subscription}; they return to the queue: {Reason}")]
    private partial void LogAckFailed(string subscription, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Channel of subscription {Subscription} is closed: {Reason}")]
    private partial void LogChannelGone(string subscription, string reason);
}
