using System.Globalization;
using Azure.Messaging.ServiceBus;
using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Envelope;
using Messaging.Topology;
using Messaging.Transport;
using Microsoft.Extensions.Logging;

namespace Messaging.ServiceBus;

/// <summary>
/// Consumes one subscription: its Service Bus subscription and its redelivery queue, through two receive loops that share
/// one limit of concurrent handlers. The SDK's prefetch stays off: prefetched messages are locked without lock renewal
/// and stay locked (then count as a delivery) when the receiver closes. Instead each receive asks for at most as many
/// messages as handler slots are free (capped by the subscription's prefetch and
/// <see cref="ServiceBusTransportOptions.MaxMessagesPerReceive"/>), so messages wait for a handler only briefly and a
/// graceful stop hands every received message to a handler rather than back to the broker.
/// </summary>
internal sealed partial class ServiceBusConsumer : ITransportConsumer
{
    private readonly ServiceBusTransport _transport;
    private readonly SubscriptionDefinition _subscription;
    private readonly DeliveryCallback _onDelivery;
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _slots;
    private readonly CancellationTokenSource _stopReceiving = new();
    private readonly CancellationTokenSource _abort = new();
    private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly List<ServiceBusReceiver> _receivers = [];
    private readonly List<Task> _loops = [];
    private int _inFlight = 1; // one reference held by the running consumer itself, dropped by the stop
    private int _disposed;
    private int _stopped;

    public ServiceBusConsumer(ServiceBusTransport transport, SubscriptionDefinition subscription, DeliveryCallback onDelivery, ILogger logger)
    {
        _transport = transport;
        _subscription = subscription;
        _onDelivery = onDelivery;
        _logger = logger;
        _slots = new SemaphoreSlim(Math.Max(1, subscription.Concurrency));
    }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var options = new ServiceBusReceiverOptions { ReceiveMode = ServiceBusReceiveMode.PeekLock, PrefetchCount = 0 };
        var client = _transport.Client;
        _receivers.Add(client.CreateReceiver(ServiceBusNames.Topic(_subscription.Topic), ServiceBusNames.Subscription(_subscription.Name), options));
        _receivers.Add(client.CreateReceiver(ServiceBusNames.RedeliveryQueue(_subscription.Name), options));
        // Peeking attaches both links now, so a missing entity fails the start with a clear error rather than a log line later.
        foreach (var receiver in _receivers)
        {
            try
            {
                await receiver.PeekMessageAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            catch (ServiceBusException ex) when (ex.Reason == ServiceBusFailureReason.MessagingEntityNotFound)
            {
                throw new InvalidOperationException(
                    $"Service Bus entity '{receiver.EntityPath}' for subscription '{_subscription.Name}' does not exist. Enable Messaging:Provisioning or create it.", ex);
            }
        }
        foreach (var receiver in _receivers)
        {
            _loops.Add(Task.Run(() => ReceiveLoopAsync(receiver), CancellationToken.None));
        }
    }

    private async Task ReceiveLoopAsync(ServiceBusReceiver receiver)
    {
        var stop = _stopReceiving.Token;
        var failures = 0;
        var maxBatch = Math.Max(1, Math.Min(_transport.Options.MaxMessagesPerReceive, Math.Min(_subscription.Prefetch, _subscription.Concurrency)));
        while (!stop.IsCancellationRequested)
        {
            IReadOnlyList<ServiceBusReceivedMessage> messages;
            try
            {
                // Never more than the free slots, and at least one (which then waits for the next free slot).
                var wanted = Math.Clamp(_slots.CurrentCount, 1, maxBatch);
                messages = await receiver.ReceiveMessagesAsync(wanted, _transport.Options.ReceiveWaitTime, stop).ConfigureAwait(false);
                failures = 0;
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                break;
            }
            catch (Exception) when (stop.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex)
            {
                // The SDK has already retried transient failures; keep the loop alive with a bounded pause (the broker may be
                // restarting, or the entity may be re-created) instead of losing the consumer.
                failures++;
                LogReceiveFailed(ex, receiver.EntityPath, _subscription.Name);
                try
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(5000, 250 * failures)), stop).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                continue;
            }
            foreach (var message in messages)
            {
                Interlocked.Increment(ref _inFlight);
                try
                {
                    await _slots.WaitAsync(_abort.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    // Aborted while waiting: hand it back at once rather than let its lock run out.
                    await SettleQuietlyAsync(() => receiver.AbandonMessageAsync(message, cancellationToken: CancellationToken.None)).ConfigureAwait(false);
                    Release();
                    continue;
                }
                _ = ProcessAsync(receiver, message);
            }
        }
    }

    private async Task ProcessAsync(ServiceBusReceiver receiver, ServiceBusReceivedMessage message)
    {
        using var renewal = CancellationTokenSource.CreateLinkedTokenSource(_abort.Token);
        var renewing = RenewLocksAsync(receiver, message, renewal.Token);
        Delivery? delivery = null;
        try
        {
            CloudEvent? cloudEvent = null;
            string? error = null;
            try
            {
                cloudEvent = _transport.Codec.Decode(message);
            }
            catch (Exception ex) when (ex is InvalidCloudEventException or FormatException or ArgumentException or InvalidOperationException)
            {
                error = ex is InvalidCloudEventException ? ex.Message : $"The message could not be decoded: {ex.Message}";
            }
            delivery = new Delivery(this, receiver, message, cloudEvent, error, AttemptOf(message));
            try
            {
                await _onDelivery(delivery, _abort.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (!_abort.IsCancellationRequested)
            {
                LogSettleFailed(ex, _subscription.Name, message.MessageId);
            }
            catch (Exception)
            {
                // Forced stop or disposal: the finally block hands the message back.
            }
        }
        finally
        {
            await renewal.CancelAsync().ConfigureAwait(false);
            await renewing.ConfigureAwait(false);
            if (delivery is null || !delivery.Settled)
            {
                // Returned to the entity; Service Bus counts the return as a delivery, like a crash would.
                await SettleQuietlyAsync(() => receiver.AbandonMessageAsync(message, cancellationToken: CancellationToken.None)).ConfigureAwait(false);
            }
            _slots.Release();
            Release();
        }
    }

    /// <summary>
    /// Keeps the message locked while its handler runs, renewing shortly before the lock would expire, up to
    /// <see cref="ServiceBusTransportOptions.MaxAutoLockRenewalDuration"/>.
    /// </summary>
    private async Task RenewLocksAsync(ServiceBusReceiver receiver, ServiceBusReceivedMessage message, CancellationToken cancellationToken)
    {
        var until = DateTimeOffset.UtcNow + _transport.Options.MaxAutoLockRenewalDuration;
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                var remaining = message.LockedUntil - DateTimeOffset.UtcNow;
                // Renew when a third of the lock is left (at least 1 s ahead), never in a tight loop.
                var wait = remaining - TimeSpan.FromTicks(Math.Max(TimeSpan.TicksPerSecond, remaining.Ticks / 3));
                await Task.Delay(wait > TimeSpan.FromMilliseconds(200) ? wait : TimeSpan.FromMilliseconds(200), cancellationToken).ConfigureAwait(false);
                if (DateTimeOffset.UtcNow >= until)
                {
                    return;
                }
                await receiver.RenewMessageLockAsync(message, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Settled or aborted.
        }
        catch (Exception ex) when (ex is ServiceBusException or ObjectDisposedException)
        {
            LogRenewFailed(ex, message.MessageId, _subscription.Name);
        }
    }

    /// <summary>Attempts before this copy (carried by retry copies) plus the broker's count of deliveries of this copy.</summary>
    internal static int AttemptOf(ServiceBusReceivedMessage message) =>
        PriorAttempts(message.ApplicationProperties) + Math.Max(1, message.DeliveryCount);

    internal static int PriorAttempts(IReadOnlyDictionary<string, object> properties) =>
        properties.TryGetValue(ServiceBusNames.PriorAttemptsProperty, out var value) ? ToInt(value) ?? 0 : 0;

    internal static int? ToInt(object? value) => value switch
    {
        int i => i,
        long l => (int)l,
        short s => s,
        byte b => b,
        uint u => (int)u,
        string s when int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var parsed) => parsed,
        _ => null,
    };

    /// <summary>A copy of a received message to send again: body and properties, without broker bookkeeping or <paramref name="strip"/>.</summary>
    internal static ServiceBusMessage Copy(ServiceBusReceivedMessage message, Func<string, bool> strip)
    {
        var copy = new ServiceBusMessage(message);
        foreach (var key in copy.ApplicationProperties.Keys.Where(strip).ToList())
        {
            copy.ApplicationProperties.Remove(key);
        }
        // Dead-lettering stores these as properties; a copy is a fresh message.
        copy.ApplicationProperties.Remove("DeadLetterReason");
        copy.ApplicationProperties.Remove("DeadLetterErrorDescription");
        copy.ScheduledEnqueueTime = default;
        return copy;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await StopReceivingAsync().ConfigureAwait(false);
        try
        {
            await _drained.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Out of time: cancel the handlers; their messages are abandoned (returned) as they unwind.
            await _abort.CancelAsync().ConfigureAwait(false);
        }
    }

    private async Task StopReceivingAsync()
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 1)
        {
            return;
        }
        if (!_stopReceiving.IsCancellationRequested)
        {
            await _stopReceiving.CancelAsync().ConfigureAwait(false);
        }
        await Task.WhenAll(_loops).ConfigureAwait(false);
        Release(); // the consumer's own reference: drained once the last in-flight message is settled
    }

    private void Release()
    {
        if (Interlocked.Decrement(ref _inFlight) == 0)
        {
            _drained.TrySetResult();
        }
    }

    /// <summary>
    /// Tears the consumer down as a crash would: receiving stops and the links close before the handlers are cancelled, so
    /// their messages stay locked until the lock expires and Service Bus counts that delivery. Abandoning them instead
    /// would hand them straight back to a link that still has credit from its last receive call.
    /// </summary>
    internal async Task AbortAsync()
    {
        if (!_stopReceiving.IsCancellationRequested)
        {
            await _stopReceiving.CancelAsync().ConfigureAwait(false);
        }
        await CloseReceiversAsync().ConfigureAwait(false);
        if (!_abort.IsCancellationRequested)
        {
            await _abort.CancelAsync().ConfigureAwait(false);
        }
        await StopReceivingAsync().ConfigureAwait(false);
        // Let the handlers unwind, but do not wait for a broker that may be gone.
        await Task.WhenAny(_drained.Task, Task.Delay(TimeSpan.FromSeconds(5))).ConfigureAwait(false);
    }

    private async Task CloseReceiversAsync()
    {
        foreach (var receiver in _receivers)
        {
            try
            {
                await receiver.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is ServiceBusException or TimeoutException or ObjectDisposedException or OperationCanceledException)
            {
                LogReceiverCloseFailed(ex, receiver.EntityPath);
            }
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
        _stopReceiving.Dispose();
        _abort.Dispose();
    }

    private async Task SettleQuietlyAsync(Func<Task> settle)
    {
        try
        {
            await settle().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is ServiceBusException or ObjectDisposedException or TimeoutException or OperationCanceledException)
        {
            // Lock lost or link gone: the broker makes the message available again when the lock expires.
            LogReturnFailed(_subscription.Name, ex.Message);
        }
    }

    private sealed class Delivery(
        ServiceBusConsumer owner,
        ServiceBusReceiver receiver,
        ServiceBusReceivedMessage message,
        CloudEvent? cloudEvent,
        string? error,
        int attempt) : ITransportDelivery
    {
        private int _settled;

        public bool Settled => Volatile.Read(ref _settled) == 1;

        public CloudEvent? Event => cloudEvent;

        public string? DecodeError => error;

        public int Attempt => attempt;

        public string Subscription => owner._subscription.Name;

        public string? MessageId => message.MessageId;

        public Task CompleteAsync(CancellationToken cancellationToken) =>
            SettleAsync(() => receiver.CompleteMessageAsync(message, CancellationToken.None));

        /// <summary>
        /// Sends a copy to the subscription's redelivery queue, scheduled for the backoff delay and carrying the attempts made
        /// so far, then completes the original. The lock is not held during the backoff (abandoning would redeliver at once and
        /// deferring needs a timer of ours that dies with the process); the broker holds the copy. The copy is sent before the
        /// original is completed: a crash in between duplicates, never loses. A zero delay is sent the same way, so the
        /// entity's MaxDeliveryCount only ever counts crashes and lost locks.
        /// </summary>
        public async Task RetryAsync(TimeSpan delay, CancellationToken cancellationToken)
        {
            var copy = Copy(message, static key => key == ServiceBusNames.PriorAttemptsProperty);
            copy.ApplicationProperties[ServiceBusNames.PriorAttemptsProperty] = attempt;
            if (delay > TimeSpan.Zero)
            {
                copy.ScheduledEnqueueTime = DateTimeOffset.UtcNow + delay;
            }
            await owner._transport.Sender(ServiceBusNames.RedeliveryQueue(owner._subscription.Name)).SendMessageAsync(copy, cancellationToken).ConfigureAwait(false);
            await CompleteAsync(cancellationToken).ConfigureAwait(false);
        }

        /// <summary>
        /// Native dead-lettering: the message moves, unchanged, to the entity's dead-letter sub-queue. The uniform metadata goes
        /// into DeadLetterReason (the reason's name) and DeadLetterErrorDescription (the description), and in full into
        /// <c>deadletter-*</c> application properties, with the attempts made so far.
        /// </summary>
        public Task DeadLetterAsync(DeadLetterMetadata metadata, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(metadata);
            var properties = new Dictionary<string, object>(StringComparer.Ordinal);
            foreach (var (key, value) in metadata.ToProperties())
            {
                properties[key] = value;
            }
            properties[ServiceBusNames.PriorAttemptsProperty] = attempt;
            return SettleAsync(() => receiver.DeadLetterMessageAsync(message, properties, metadata.Reason.ToString(),
                metadata.Description ?? metadata.Reason.ToString(), CancellationToken.None));
        }

        private async Task SettleAsync(Func<Task> settle)
        {
            if (Interlocked.Exchange(ref _settled, 1) == 1)
            {
                return;
            }
            try
            {
                await settle().ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is ServiceBusException or ObjectDisposedException)
            {
                // The lock is gone (expired, or the link dropped with the connection) or the broker refused: the message stays
                // on the entity and is delivered again once its lock expires, at least once.
                owner.LogLockLost(owner._subscription.Name, message.MessageId, ex.Message);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Receiving from {Entity} for subscription {Subscription} failed; retrying")]
    private partial void LogReceiveFailed(Exception exception, string entity, string subscription);

    [LoggerMessage(Level = LogLevel.Error, Message = "Could not settle message {MessageId} on subscription {Subscription}; it is returned to the entity")]
    private partial void LogSettleFailed(Exception exception, string subscription, string? messageId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not renew the lock of message {MessageId} on subscription {Subscription}")]
    private partial void LogRenewFailed(Exception exception, string? messageId, string subscription);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Settling message {MessageId} on subscription {Subscription} failed ({Reason}); the broker will deliver it again")]
    private partial void LogLockLost(string subscription, string? messageId, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Returning a message of subscription {Subscription} failed: {Reason}")]
    private partial void LogReturnFailed(string subscription, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Closing the receiver of {Entity} failed")]
    private partial void LogReceiverCloseFailed(Exception exception, string entity);
}
