using System.Collections.Concurrent;
using System.Globalization;
using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Envelope;
using Messaging.Topology;
using Messaging.Transport;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace Messaging.RabbitMQ;

internal sealed partial class RabbitMqConsumer : ITransportConsumer
{
    private readonly RabbitMqTransport _transport;
    private readonly SubscriptionDefinition _subscription;
    private readonly DeliveryCallback _onDelivery;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _abort = new();
    private readonly ConcurrentDictionary<TimeSpan, Task> _retryQueues = new();
    private readonly string _queue;
    private readonly SemaphoreSlim _slots;

    /// <summary>How long handled deliveries may wait behind a slower one before they are acknowledged one by one.</summary>
    internal static readonly TimeSpan AckLinger = TimeSpan.FromMilliseconds(100);

    private static readonly TimeSpan DisposeFlushTimeout = TimeSpan.FromSeconds(5);
    private IChannel? _channel;
    private RabbitMqAckBatcher? _acks;
    private string? _consumerTag;
    private int _inFlight;
    private volatile bool _stopping;
    private int _disposed;

    public RabbitMqConsumer(RabbitMqTransport transport, SubscriptionDefinition subscription, DeliveryCallback onDelivery, ILogger logger)
    {
        _transport = transport;
        _subscription = subscription;
        _onDelivery = onDelivery;
        _logger = logger;
        _queue = RabbitMqNames.Queue(subscription.Name);
        _slots = new SemaphoreSlim(Math.Max(1, subscription.Concurrency));
    }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var connection = await _transport.Connections.ConsumingAsync(cancellationToken).ConfigureAwait(false);
        _channel = await connection.CreateChannelAsync(new CreateChannelOptions(
            publisherConfirmationsEnabled: false,
            publisherConfirmationTrackingEnabled: false,
            consumerDispatchConcurrency: 1), cancellationToken).ConfigureAwait(false);
        var window = (ushort)Math.Clamp(Math.Max(_subscription.Prefetch, _subscription.Concurrency), 1, ushort.MaxValue);
        await _channel.BasicQosAsync(0, window, global: false, cancellationToken).ConfigureAwait(false);
        var channel = _channel;
        _acks = new RabbitMqAckBatcher(
            (tag, multiple) => channel.BasicAckAsync(tag, multiple, CancellationToken.None),
            ex => LogAckFailed(_subscription.Name, ex.Message),
            individualThreshold: Math.Max(1, window / 4),
            linger: AckLinger);
        var consumer = new AsyncEventingBasicConsumer(_channel);
        consumer.ReceivedAsync += OnReceivedAsync;
        try
        {
            _consumerTag = await _channel.BasicConsumeAsync(_queue, autoAck: false, consumer, cancellationToken).ConfigureAwait(false);
        }
        catch (global::RabbitMQ.Client.Exceptions.OperationInterruptedException ex) when (ex.ShutdownReason?.ReplyCode == 404)
        {
            throw new InvalidOperationException($"RabbitMQ queue '{_queue}' for subscription '{_subscription.Name}' does not exist. Enable Messaging:Provisioning or create it.", ex);
        }
    }

    private async Task OnReceivedAsync(object sender, BasicDeliverEventArgs args)
    {
        var slot = _acks!.Track(args.DeliveryTag);
        if (_stopping)
        {
            // Arrived after the stop began: hand it back untouched for another consumer.
            await NackAsync(args.DeliveryTag, slot).ConfigureAwait(false);
            return;
        }
        // The client dispatches one message at a time; the concurrency limit is ours. Waiting for a slot here holds the
        // dispatcher back (and, through prefetch, the broker). A handler that completes synchronously never leaves this
        // thread, which is what makes this faster than the client's multi-threaded dispatch.
        try
        {
            await _slots.WaitAsync(_abort.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return; // aborted: stays unacknowledged and returns to the queue with the channel
        }
        Interlocked.Increment(ref _inFlight);
        // The client's body buffer is only valid during this callback. The copy is overwritten whole, so it need not be zeroed first.
        var body = GC.AllocateUninitializedArray<byte>(args.Body.Length);
        args.Body.Span.CopyTo(body);
        _ = ProcessAsync(args.DeliveryTag, slot, args.BasicProperties, body, args.Redelivered);
    }

    /// <summary>Returns a delivery to the queue with a frame of its own, before any multiple-ack can pass over it.</summary>
    private async Task NackAsync(ulong deliveryTag, RabbitMqAckBatcher.Slot slot)
    {
        await SafeAsync(() => _channel!.BasicNackAsync(deliveryTag, multiple: false, requeue: true, CancellationToken.None).AsTask()).ConfigureAwait(false);
        _acks!.SettledElsewhere(slot);
    }

    private async Task ProcessAsync(ulong deliveryTag, RabbitMqAckBatcher.Slot slot, IReadOnlyBasicProperties properties, byte[] body, bool redelivered)
    {
        try
        {
            var attempt = AttemptOf(properties, redelivered);
            CloudEvent? cloudEvent = null;
            string? error = null;
            try
            {
                cloudEvent = _transport.Codec.Decode(properties, body, bodyIsOwned: true);
            }
            catch (InvalidCloudEventException ex)
            {
                error = ex.Message;
            }
            var delivery = new Delivery(this, slot, properties, body, cloudEvent, error, attempt);
            try
            {
                await _onDelivery(delivery, _abort.Token).ConfigureAwait(false);
                if (!_abort.IsCancellationRequested && delivery.TryClaim())
                {
                    // Never expected; left alone it would hold back the acknowledgement of every later delivery.
                    LogNotSettled(_subscription.Name, properties.MessageId);
                    await NackAsync(deliveryTag, slot).ConfigureAwait(false);
                }
            }
            catch (Exception ex) when (!_abort.IsCancellationRequested)
            {
                LogSettleFailed(ex, _subscription.Name, properties.MessageId);
                if (delivery.TryClaim())
                {
                    await NackAsync(deliveryTag, slot).ConfigureAwait(false);
                }
            }
            catch (Exception)
            {
                // Forced stop: leave it unacknowledged; closing the channel returns it to the queue.
            }
        }
        finally
        {
            Interlocked.Decrement(ref _inFlight);
            _slots.Release();
        }
    }

    /// <summary>Attempts before this copy (carried by retry copies) + returns of this copy counted by the quorum queue + this one.</summary>
    private static int AttemptOf(IReadOnlyBasicProperties properties, bool redelivered)
    {
        var prior = 0;
        long? deliveryCount = null;
        if (properties.Headers is { } headers)
        {
            if (headers.TryGetValue(RabbitMqNames.PriorAttemptsHeader, out var p))
            {
                prior = ToInt(p) ?? 0;
            }
            if (headers.TryGetValue(RabbitMqNames.DeliveryCountHeader, out var d))
            {
                deliveryCount = ToInt(d);
            }
        }
        return prior + (int)(deliveryCount ?? (redelivered ? 1 : 0)) + 1;
    }

    internal static int? ToInt(object? value) => value switch
    {
        int i => i,
        long l => (int)l,
        short s => s,
        byte b => b,
        uint u => (int)u,
        ulong ul => (int)ul,
        byte[] bytes when int.TryParse(System.Text.Encoding.UTF8.GetString(bytes), NumberStyles.Integer, CultureInfo.InvariantCulture, out var parsed) => parsed,
        string s when int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var parsed) => parsed,
        _ => null,
    };

    /// <summary>Headers of a copy: the original's, minus what the broker added, plus <paramref name="extra"/>.</summary>
    internal static Dictionary<string, object?> CopyHeaders(IReadOnlyBasicProperties properties, IEnumerable<KeyValuePair<string, object?>> extra)
    {
        var headers = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (properties.Headers is { } original)
        {
            foreach (var (key, value) in original)
            {
                if (key.StartsWith("x-", StringComparison.Ordinal))
                {
                    continue; // x-death, x-delivery-count, x-first-death-*: broker bookkeeping of the old copy
                }
                headers[key] = value;
            }
        }
        foreach (var (key, value) in extra)
        {
            headers[key] = value;
        }
        return headers;
    }

    internal static BasicProperties CopyProperties(IReadOnlyBasicProperties source, Dictionary<string, object?> headers) => new()
    {
        Persistent = true,
        ContentType = source.ContentType,
        ContentEncoding = source.ContentEncoding,
        MessageId = source.MessageId,
        CorrelationId = source.CorrelationId,
        Type = source.Type,
        AppId = source.AppId,
        Timestamp = source.Timestamp,
        Headers = headers,
    };

    private Task EnsureRetryQueueAsync(TimeSpan delay, CancellationToken cancellationToken) =>
        _retryQueues.GetOrAdd(delay, d => DeclareRetryQueueAsync(d, cancellationToken));

    private async Task DeclareRetryQueueAsync(TimeSpan delay, CancellationToken cancellationToken)
    {
        var connection = await _transport.Connections.PublishingAsync(cancellationToken).ConfigureAwait(false);
        await using var channel = await connection.CreateChannelAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        await RabbitMqTransport.DeclareRetryQueueAsync(channel, _subscription.Name, delay, cancellationToken).ConfigureAwait(false);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        _stopping = true;
        if (_channel is { IsOpen: true } && _consumerTag is not null)
        {
            await SafeAsync(() => _channel.BasicCancelAsync(_consumerTag, noWait: false, cancellationToken)).ConfigureAwait(false);
        }
        try
        {
            while (Volatile.Read(ref _inFlight) > 0)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(20), cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
            await _abort.CancelAsync().ConfigureAwait(false);
        }
        if (_acks is not null)
        {
            try
            {
                await _acks.FlushAsync().WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Out of time: what is not acknowledged returns to the queue with the channel.
            }
        }
    }

    internal async Task AbortAsync()
    {
        _stopping = true;
        if (!_abort.IsCancellationRequested)
        {
            await _abort.CancelAsync().ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }
        _transport.Forget(this);
        await AbortAsync().ConfigureAwait(false);
        if (_acks is not null)
        {
            // Handled deliveries are acknowledged even when the consumer goes away without a stop, if the channel lets us.
            try
            {
                await _acks.FlushAsync().WaitAsync(DisposeFlushTimeout).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                // They return to the queue with the channel.
            }
            await _acks.DisposeAsync().ConfigureAwait(false);
        }
        if (_channel is not null)
        {
            await SafeAsync(() => _channel.CloseAsync()).ConfigureAwait(false);
            await _channel.DisposeAsync().ConfigureAwait(false);
        }
    }

    private async Task SafeAsync(Func<Task> action)
    {
        try
        {
            await action().ConfigureAwait(false);
        }
        catch (Exception ex) when (IsChannelGone(ex))
        {
            LogChannelGone(_subscription.Name, ex.Message);
        }
    }

    private static bool IsChannelGone(Exception ex) =>
        ex is global::RabbitMQ.Client.Exceptions.AlreadyClosedException or global::RabbitMQ.Client.Exceptions.OperationInterruptedException
            or ObjectDisposedException or IOException or OperationCanceledException;

    private sealed class Delivery(
        RabbitMqConsumer owner,
        RabbitMqAckBatcher.Slot slot,
        IReadOnlyBasicProperties properties,
        byte[] body,
        CloudEvent? cloudEvent,
        string? error,
        int attempt) : ITransportDelivery
    {
        private int _settled;

        public CloudEvent? Event => cloudEvent;

        public string? DecodeError => error;

        public int Attempt => attempt;

        public string Subscription => owner._subscription.Name;

        public string? MessageId => properties.MessageId;

        public Task CompleteAsync(CancellationToken cancellationToken) => AckAsync();

        public async Task RetryAsync(TimeSpan delay, CancellationToken cancellationToken)
        {
            var target = RabbitMqNames.Queue(owner._subscription.Name);
            if (delay > TimeSpan.Zero)
            {
                await owner.EnsureRetryQueueAsync(delay, cancellationToken).ConfigureAwait(false);
                target = RabbitMqNames.RetryQueue(owner._subscription.Name, delay);
            }
            var headers = CopyHeaders(properties, [new(RabbitMqNames.PriorAttemptsHeader, attempt)]);
            // Publish the copy (confirmed) before acknowledging the original: a crash in between duplicates, never loses.
            await owner._transport.Publisher.PublishAsync(
                [new OutgoingMessage(string.Empty, target, Mandatory: true, CopyProperties(properties, headers), body)], cancellationToken).ConfigureAwait(false);
            await AckAsync().ConfigureAwait(false);
        }

        public async Task DeadLetterAsync(DeadLetterMetadata metadata, CancellationToken cancellationToken)
        {
            var extra = metadata.ToProperties().Select(p => new KeyValuePair<string, object?>(p.Key, p.Value)).ToList();
            extra.Add(new(RabbitMqNames.DeadLetterIdHeader, Guid.NewGuid().ToString("N")));
            extra.Add(new(RabbitMqNames.PriorAttemptsHeader, attempt));
            var headers = CopyHeaders(properties, extra);
            await owner._transport.Publisher.PublishAsync(
                [new OutgoingMessage(string.Empty, RabbitMqNames.DeadLetterQueue(owner._subscription.Name), Mandatory: true, CopyProperties(properties, headers), body)],
                cancellationToken).ConfigureAwait(false);
            await AckAsync().ConfigureAwait(false);
        }

        /// <summary>Takes the right to settle; false when it is already settled.</summary>
        public bool TryClaim() => Interlocked.Exchange(ref _settled, 1) == 0;

        private Task AckAsync()
        {
            // The frame goes out with the channel's next batch. If the channel was recovered meanwhile, the tag is
            // stale: the client drops the ack and the broker redelivers.
            if (TryClaim())
            {
                owner._acks!.Ack(slot);
            }
            return Task.CompletedTask;
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Could not settle message {MessageId} on subscription {Subscription}; it was returned to the queue")]
    private partial void LogSettleFailed(Exception exception, string subscription, string? messageId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "A delivery of message {MessageId} on subscription {Subscription} was not settled by its handler; returning it")]
    private partial void LogNotSettled(string subscription, string? messageId);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Could not acknowledge deliveries of subscription {Subscription}; they return to the queue: {Reason}")]
    private partial void LogAckFailed(string subscription, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Channel of subscription {Subscription} is closed: {Reason}")]
    private partial void LogChannelGone(string subscription, string reason);
}
