using Azure.Messaging.ServiceBus;
using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Transport;
using Microsoft.Extensions.Logging;

namespace Messaging.ServiceBus;

/// <summary>
/// Service Bus's receive loops for one subscription: its Service Bus subscription and its redelivery queue, two loops that
/// share the pipeline's places. Everything between receiving and settling is the <see cref="ReceivePipeline"/>'s. The SDK's
/// prefetch stays off: prefetched messages are locked without lock renewal and stay locked (then count as a delivery) when the
/// receiver closes. Instead each receive asks for few messages (<see cref="ServiceBusTransportOptions.MaxMessagesPerReceive"/>),
/// and the pipeline holds at most <c>Concurrency</c> plus one receive's worth, so messages wait for a handler only briefly and a
/// graceful stop hands every received message to a handler rather than back to the broker.
/// </summary>
internal sealed partial class ServiceBusSubscriptionReceiver : ITransportReceiver
{
    /// <summary>Service Bus refuses a dead-letter reason or description longer than this.</summary>
    internal const int MaxDeadLetterTextLength = 4096;

    private readonly ServiceBusTransport _transport;
    private readonly ReceivePipeline _pipeline;
    private readonly string _subscription;
    private readonly ILogger _logger;
    private readonly List<ServiceBusReceiver> _receivers = [];
    private readonly List<PullReceiveLoop<ServiceBusReceivedMessage>> _loops = [];
    private readonly List<IDisposable> _watches = [];
    private readonly int _maxBatch;
    private volatile bool _crashed;
    private int _disposed;

    public ServiceBusSubscriptionReceiver(ServiceBusTransport transport, ReceivePipeline pipeline, ILogger logger)
    {
        _transport = transport;
        _pipeline = pipeline;
        _subscription = pipeline.Subscription.Name;
        _logger = logger;
        var subscription = pipeline.Subscription;
        _maxBatch = Math.Max(1, Math.Min(transport.Options.MaxMessagesPerReceive, Math.Min(subscription.Prefetch, subscription.Concurrency)));
    }

    /// <summary>The subscription received (its name in the topology).</summary>
    internal string Subscription => _subscription;

    /// <summary>Every received message is handled before a graceful stop ends: giving it back would count a delivery.</summary>
    public StopBehavior StopBehavior => StopBehavior.HandleReceived;

    /// <summary>A third of the lock, so that two renewals can fail before a held message's lock expires.</summary>
    public TimeSpan? LeaseRenewalInterval => TimeSpan.FromTicks(Math.Max(TimeSpan.TicksPerSecond, _transport.Options.LockDuration.Ticks / 3));

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        _pipeline.LimitHeldMessages(_pipeline.Subscription.Concurrency + _maxBatch);
        var client = _transport.Client;
        ServiceBusReceiverOptions Options()
        {
            var identifier = $"{_subscription}-{Guid.NewGuid():N}";
            _watches.Add(ServiceBusLinkEvents.Watch(identifier, error => LogLinkClosed(identifier, _subscription, FirstLine(error))));
            return new ServiceBusReceiverOptions { ReceiveMode = ServiceBusReceiveMode.PeekLock, PrefetchCount = 0, Identifier = identifier };
        }
        _receivers.Add(client.CreateReceiver(ServiceBusNames.Topic(_pipeline.Subscription.Topic), ServiceBusNames.Subscription(_subscription), Options()));
        _receivers.Add(client.CreateReceiver(ServiceBusNames.RedeliveryQueue(_subscription), Options()));
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
                    $"Service Bus entity '{receiver.EntityPath}' for subscription '{_subscription}' does not exist. Enable Messaging:Provisioning or create it.", ex);
            }
        }
        foreach (var receiver in _receivers)
        {
            // The SDK has already retried transient failures; the loop backs off and goes on (the broker may be restarting,
            // or the entity may be re-created) instead of losing the consumer.
            var loop = new PullReceiveLoop<ServiceBusReceivedMessage>(_pipeline, receiver.EntityPath, _maxBatch,
                async (places, ct) => await receiver.ReceiveMessagesAsync(places, _transport.Options.ReceiveWaitTime, ct).ConfigureAwait(false),
                message => new Message(this, receiver, message), _logger, maxBackoff: TimeSpan.FromSeconds(5));
            _loops.Add(loop);
            loop.Start();
        }
    }

    /// <summary>
    /// Renews the locks of held messages, up to <see cref="ServiceBusTransportOptions.MaxAutoLockRenewalDuration"/> after each was
    /// received; a lock the broker says is lost, or one left to expire after that duration, is a lost lease.
    /// </summary>
    public async Task RenewLeasesAsync(IReadOnlyList<ReceivedMessage> messages, CancellationToken cancellationToken)
    {
        var now = _pipeline.Time.GetUtcNow();
        var renewals = new List<Task>(messages.Count);
        foreach (var message in messages.Cast<Message>())
        {
            if (now - message.ReceivedAt >= _transport.Options.MaxAutoLockRenewalDuration)
            {
                if (now >= message.LockedUntil)
                {
                    message.ReportLeaseLost($"the lock expired after MaxAutoLockRenewalDuration ({_transport.Options.MaxAutoLockRenewalDuration})");
                }
                continue;
            }
            renewals.Add(RenewAsync(message, now, cancellationToken));
        }
        await Task.WhenAll(renewals).ConfigureAwait(false);
    }

    private async Task RenewAsync(Message message, DateTimeOffset now, CancellationToken cancellationToken)
    {
        try
        {
            await message.Receiver.RenewMessageLockAsync(message.Received, cancellationToken).ConfigureAwait(false);
            message.LeasedAt = now;
        }
        catch (ServiceBusException ex) when (ex.Reason is ServiceBusFailureReason.MessageLockLost or ServiceBusFailureReason.MessageNotFound)
        {
            message.ReportLeaseLost(ex.Reason.ToString());
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            // Transient (the SDK retried already): renewal goes on at the next tick.
            LogRenewFailed(ex, message.MessageId, _subscription);
        }
    }

    public Task StopReceivingAsync(CancellationToken cancellationToken) => Task.WhenAll(_loops.Select(l => l.StopAsync(cancellationToken)));

    public Task DrainedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Tears the receiver down as a crash would: receiving stops and the links close before the handlers are cancelled, so
    /// their messages stay locked until the lock expires and Service Bus counts that delivery. Abandoning them instead would
    /// hand them straight back to a link that still has credit from its last receive call.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }
        _transport.Forget(this);
        _crashed = !_pipeline.IsStopping;
        await Task.WhenAll(_loops.Select(l => l.DisposeAsync().AsTask())).ConfigureAwait(false);
        await CloseReceiversAsync().ConfigureAwait(false);
        await _pipeline.AbortAsync().ConfigureAwait(false);
    }

    private static string FirstLine(string text) => text.Split('\n', 2)[0].Trim();

    private async Task CloseReceiversAsync()
    {
        foreach (var watch in _watches)
        {
            watch.Dispose();
        }
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

    private static string Clip(string text) => text.Length <= MaxDeadLetterTextLength ? text : text[..(MaxDeadLetterTextLength - 1)] + "…";

    /// <summary>One received message: its wire mapping and settlement primitives.</summary>
    private sealed class Message(ServiceBusSubscriptionReceiver owner, ServiceBusReceiver receiver, ServiceBusReceivedMessage received) : ReceivedMessage
    {
        public ServiceBusReceiver Receiver => receiver;

        public ServiceBusReceivedMessage Received => received;

        public DateTimeOffset LockedUntil => received.LockedUntil;

        public override string? MessageId => received.MessageId;

        protected override int ReadAttempt() => ServiceBusMessageCopy.AttemptOf(received);

        protected override CloudEvent Decode() => owner._transport.Codec.Decode(received);

        protected override Task CompleteAsync(CancellationToken cancellationToken) =>
            receiver.CompleteMessageAsync(received, cancellationToken);

        /// <summary>
        /// Sends a copy to the subscription's redelivery queue, scheduled for the backoff delay and carrying the attempts made
        /// so far, then completes the original. The lock is not held during the backoff (abandoning would redeliver at once and
        /// deferring needs a timer of ours that dies with the process); the broker holds the copy. The copy is sent before the
        /// original is completed: a crash in between duplicates, never loses. A zero delay is sent the same way, so the
        /// entity's MaxDeliveryCount only ever counts crashes and lost locks.
        /// </summary>
        protected override async Task RetryAsync(TimeSpan delay, CancellationToken cancellationToken)
        {
            var copy = ServiceBusMessageCopy.Copy(received, static key => key == ServiceBusNames.PriorAttemptsProperty);
            copy.ApplicationProperties[ServiceBusNames.PriorAttemptsProperty] = Attempt;
            if (delay > TimeSpan.Zero)
            {
                copy.ScheduledEnqueueTime = owner._pipeline.Time.GetUtcNow() + delay;
            }
            await owner._transport.Sender(ServiceBusNames.RedeliveryQueue(owner._subscription)).SendMessageAsync(copy, cancellationToken).ConfigureAwait(false);
            await receiver.CompleteMessageAsync(received, cancellationToken).ConfigureAwait(false);
        }

        /// <summary>
        /// Native dead-lettering: the message moves, unchanged, to the entity's dead-letter sub-queue. The uniform metadata goes
        /// into DeadLetterReason (the reason's name) and DeadLetterErrorDescription (the description, clipped to the 4,096
        /// characters Service Bus allows), and in full into <c>deadletter-*</c> application properties, with the attempts made so far.
        /// </summary>
        protected override Task DeadLetterAsync(DeadLetterMetadata metadata, CancellationToken cancellationToken)
        {
            var properties = new Dictionary<string, object>(StringComparer.Ordinal);
            foreach (var (key, value) in metadata.ToProperties())
            {
                properties[key] = value;
            }
            properties[ServiceBusNames.PriorAttemptsProperty] = Attempt;
            return receiver.DeadLetterMessageAsync(received, properties, metadata.Reason.ToString(),
                Clip(metadata.Description ?? metadata.Reason.ToString()), cancellationToken);
        }

        /// <summary>Abandons the message (the broker counts a delivery); after a crash nothing is given back and the lock expires.</summary>
        protected override Task ReturnAsync(CancellationToken cancellationToken) =>
            owner._crashed ? Task.CompletedTask : receiver.AbandonMessageAsync(received, cancellationToken: cancellationToken);
    }


    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not renew the lock of message {MessageId} on subscription {Subscription}; trying again at the next renewal")]
    private partial void LogRenewFailed(Exception exception, string? messageId, string subscription);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Closing the receiver of {Entity} failed")]
    private partial void LogReceiverCloseFailed(Exception exception, string entity);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Service Bus closed receive link {Receiver} of subscription {Subscription}: {Error}; the client attaches it again, and messages it held come back when their locks expire")]
    private partial void LogLinkClosed(string receiver, string subscription, string error);
}
