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
/// <para>
/// An ordered subscription is session-enabled (SessionId = <c>partitionkey</c>): up to <c>Concurrency</c> session loops
/// each accept the next available session, receive its messages in order into the pipeline's lanes, keep its lock renewed
/// while any of them is held (the pipeline's lease renewal renews the session lock), and close it once every message it
/// received is settled and none arrived for <see cref="ServiceBusTransportOptions.SessionIdleTimeout"/>. A session is only
/// closed when none of its messages is held, so the next consumer to accept it starts where this one ended.
/// </para>
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
    private readonly List<Task> _sessionLoops = [];
    private readonly List<Task> _sessionReceiving = [];
    private readonly System.Collections.Concurrent.ConcurrentDictionary<HeldSession, byte> _sessions = new();
    private readonly CancellationTokenSource _stopSessions = new();
    private readonly CancellationTokenSource _disposeSessions = new();
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
        var ordered = _pipeline.Subscription.Ordered;
        if (!ordered)
        {
            _receivers.Add(client.CreateReceiver(ServiceBusNames.Topic(_pipeline.Subscription.Topic), ServiceBusNames.Subscription(_subscription), Options()));
        }
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
        if (ordered)
        {
            for (var i = 0; i < Math.Max(1, _pipeline.Subscription.Concurrency); i++)
            {
                var receiving = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                _sessionReceiving.Add(receiving.Task);
                _sessionLoops.Add(Task.Run(() => SessionLoopAsync(Options, receiving)));
            }
        }
    }

    // ---- sessions (ordered subscriptions) ------------------------------------------------------

    /// <summary>
    /// One session slot: reserves a place, accepts the next available session (none within the receive wait is no error:
    /// Service Bus answers ServiceTimeout), holds it while it delivers, and starts over.
    /// </summary>
    private async Task SessionLoopAsync(Func<ServiceBusReceiverOptions> options, TaskCompletionSource receiving)
    {
        var token = _stopSessions.Token;
        var backoff = TimeSpan.FromMilliseconds(200);
        var source = $"{ServiceBusNames.Topic(_pipeline.Subscription.Topic)}/Subscriptions/{ServiceBusNames.Subscription(_subscription)} (sessions)";
        try
        {
            while (!token.IsCancellationRequested)
            {
                int places;
                try
                {
                    places = await _pipeline.ReserveAsync(_maxBatch, token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                ServiceBusSessionReceiver session;
                try
                {
                    // Bounded by the receive wait, so that a stop never waits for the SDK's try timeout.
                    using var window = CancellationTokenSource.CreateLinkedTokenSource(token);
                    window.CancelAfter(_transport.Options.ReceiveWaitTime);
                    var receiverOptions = options();
                    session = await _transport.Client.AcceptNextSessionAsync(ServiceBusNames.Topic(_pipeline.Subscription.Topic), ServiceBusNames.Subscription(_subscription),
                        new ServiceBusSessionReceiverOptions { ReceiveMode = ServiceBusReceiveMode.PeekLock, PrefetchCount = 0, Identifier = receiverOptions.Identifier }, window.Token).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is OperationCanceledException || ex is ServiceBusException { Reason: ServiceBusFailureReason.ServiceTimeout })
                {
                    _pipeline.CancelReservation(places);
                    _pipeline.ReportReceiveRecovered(source);
                    continue; // no session available now, or stopping
                }
                catch (Exception ex)
                {
                    _pipeline.CancelReservation(places);
                    LogAcceptFailed(ex, _subscription, backoff);
                    _pipeline.ReportReceiveFailing($"{ex.GetType().Name}: {ex.Message}", source);
                    try
                    {
                        await Task.Delay(backoff, _pipeline.Time, token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                    backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, TimeSpan.FromSeconds(5).Ticks));
                    continue;
                }
                _pipeline.ReportReceiveRecovered(source);
                backoff = TimeSpan.FromMilliseconds(200);
                var held = new HeldSession(session);
                _sessions.TryAdd(held, 0);
                try
                {
                    await ReceiveSessionAsync(held, places, token).ConfigureAwait(false);
                    if (token.IsCancellationRequested)
                    {
                        receiving.TrySetResult();
                    }
                    // Closed only once nothing of it is held: whoever accepts it next starts after the last message settled here.
                    if (!held.Lost)
                    {
                        await held.Drained.WaitAsync(_disposeSessions.Token).ConfigureAwait(false);
                    }
                }
                catch (OperationCanceledException)
                {
                    // Disposed: the session closes below, its messages come back.
                }
                finally
                {
                    _sessions.TryRemove(held, out _);
                    await CloseSessionAsync(held).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            receiving.TrySetResult();
        }
    }

    /// <summary>Receives a held session's messages into the pipeline until it is idle, lost, or receiving stops.</summary>
    private async Task ReceiveSessionAsync(HeldSession held, int places, CancellationToken token)
    {
        while (!token.IsCancellationRequested && !held.Lost)
        {
            if (places == 0)
            {
                try
                {
                    places = await _pipeline.ReserveAsync(_maxBatch, token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
            IReadOnlyList<ServiceBusReceivedMessage> received;
            try
            {
                received = await held.Receiver.ReceiveMessagesAsync(places, _transport.Options.SessionIdleTimeout, token).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                _pipeline.CancelReservation(places);
                if (!token.IsCancellationRequested)
                {
                    // Lost (the broker detached the session link: the SDK closes the receiver) or failing: the session goes.
                    SessionLost(held, ex is ServiceBusException serviceBus ? serviceBus.Reason.ToString() : ex.GetType().Name);
                }
                return;
            }
            _pipeline.CancelReservation(places - Math.Min(places, received.Count));
            places = 0;
            foreach (var message in received)
            {
                var wrapped = new Message(this, held.Receiver, message, held);
                held.Add(wrapped);
                _pipeline.Submit(wrapped, reserved: true);
            }
            if (received.Count == 0 && held.IsDrained)
            {
                return;
            }
        }
        _pipeline.CancelReservation(places);
    }

    /// <summary>The session's lock is gone: every message of it still held is a lost lease (the broker delivers them again).</summary>
    private void SessionLost(HeldSession held, string reason)
    {
        held.Lost = true;
        foreach (var message in held.Outstanding())
        {
            message.ReportLeaseLost($"the session lock of session '{held.Receiver.SessionId}' was lost ({reason})");
            held.Done(message);
        }
    }

    private async Task CloseSessionAsync(HeldSession held)
    {
        try
        {
            await held.Receiver.DisposeAsync().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is ServiceBusException or TimeoutException or ObjectDisposedException or OperationCanceledException)
        {
            LogReceiverCloseFailed(ex, held.Receiver.EntityPath);
        }
    }

    /// <summary>A session this consumer holds, and the messages of it the pipeline holds.</summary>
    private sealed class HeldSession(ServiceBusSessionReceiver receiver)
    {
        private readonly HashSet<Message> _outstanding = [];
        private TaskCompletionSource _drained = Completed();

        public ServiceBusSessionReceiver Receiver => receiver;

        public volatile bool Lost;

        public bool IsDrained
        {
            get
            {
                lock (_outstanding)
                {
                    return _outstanding.Count == 0;
                }
            }
        }

        public Task Drained
        {
            get
            {
                lock (_outstanding)
                {
                    return _drained.Task;
                }
            }
        }

        public void Add(Message message)
        {
            lock (_outstanding)
            {
                if (_outstanding.Count == 0)
                {
                    _drained = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                }
                _outstanding.Add(message);
            }
        }

        public void Done(Message message)
        {
            lock (_outstanding)
            {
                if (_outstanding.Remove(message) && _outstanding.Count == 0)
                {
                    _drained.TrySetResult();
                }
            }
        }

        public List<Message> Outstanding()
        {
            lock (_outstanding)
            {
                return [.. _outstanding];
            }
        }

        private static TaskCompletionSource Completed()
        {
            var done = new TaskCompletionSource();
            done.SetResult();
            return done;
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
        // Messages of a session are locked by the session's lock: one renewal per session covers them all.
        foreach (var bySession in messages.Cast<Message>().Where(m => m.Session is not null).GroupBy(m => m.Session!))
        {
            renewals.Add(RenewSessionAsync(bySession.Key, [.. bySession], now, cancellationToken));
        }
        foreach (var message in messages.Cast<Message>().Where(m => m.Session is null))
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

    private async Task RenewSessionAsync(HeldSession held, List<Message> messages, DateTimeOffset now, CancellationToken cancellationToken)
    {
        if (messages.All(m => now - m.ReceivedAt >= _transport.Options.MaxAutoLockRenewalDuration))
        {
            if (now >= held.Receiver.SessionLockedUntil)
            {
                SessionLost(held, $"the session lock expired after MaxAutoLockRenewalDuration ({_transport.Options.MaxAutoLockRenewalDuration})");
            }
            return;
        }
        try
        {
            await held.Receiver.RenewSessionLockAsync(cancellationToken).ConfigureAwait(false);
            foreach (var message in messages)
            {
                message.LeasedAt = now;
            }
        }
        catch (Exception ex) when (ex is ServiceBusException { Reason: ServiceBusFailureReason.SessionLockLost } or ObjectDisposedException)
        {
            SessionLost(held, ex is ServiceBusException serviceBus ? serviceBus.Reason.ToString() : "the session receiver was closed");
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            LogRenewFailed(ex, messages[0].MessageId, _subscription);
        }
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

    /// <summary>Stops receiving; held sessions stay open until their messages are settled (see <see cref="DrainedAsync"/>).</summary>
    public async Task StopReceivingAsync(CancellationToken cancellationToken)
    {
        await _stopSessions.CancelAsync().ConfigureAwait(false);
        await Task.WhenAll(_loops.Select(l => l.StopAsync(cancellationToken)).Concat(_sessionReceiving.Select(r => r.WaitAsync(cancellationToken)))).ConfigureAwait(false);
    }

    /// <summary>Every received message is settled: the held sessions close.</summary>
    public Task DrainedAsync(CancellationToken cancellationToken) => Task.WhenAll(_sessionLoops).WaitAsync(cancellationToken);

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
        await _stopSessions.CancelAsync().ConfigureAwait(false);
        await _disposeSessions.CancelAsync().ConfigureAwait(false);
        await Task.WhenAll(_loops.Select(l => l.DisposeAsync().AsTask())).ConfigureAwait(false);
        // Closing a session receiver releases its session: the broker hands its messages, in order, to the next consumer.
        foreach (var held in _sessions.Keys)
        {
            await CloseSessionAsync(held).ConfigureAwait(false);
        }
        await Task.WhenAny(Task.WhenAll(_sessionLoops), Task.Delay(TimeSpan.FromSeconds(10), _pipeline.Time)).ConfigureAwait(false);
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
    private sealed class Message(ServiceBusSubscriptionReceiver owner, ServiceBusReceiver receiver, ServiceBusReceivedMessage received, HeldSession? session = null) : ReceivedMessage
    {
        public ServiceBusReceiver Receiver => receiver;

        /// <summary>The session it was received in (ordered subscriptions), or null.</summary>
        public HeldSession? Session => session;

        /// <summary>Runs a settlement primitive; afterwards the session no longer waits for this message, whatever the outcome.</summary>
        private async Task SettleAsync(Func<Task> settle)
        {
            try
            {
                await settle().ConfigureAwait(false);
            }
            finally
            {
                session?.Done(this);
            }
        }

        public ServiceBusReceivedMessage Received => received;

        public DateTimeOffset LockedUntil => received.LockedUntil;

        public override string? MessageId => received.MessageId;

        protected override int ReadAttempt() => ServiceBusMessageCopy.AttemptOf(received);

        protected override CloudEvent Decode() => owner._transport.Codec.Decode(received);

        protected override Task CompleteAsync(CancellationToken cancellationToken) =>
            SettleAsync(() => receiver.CompleteMessageAsync(received, cancellationToken));

        /// <summary>
        /// Sends a copy to the subscription's redelivery queue, scheduled for the backoff delay and carrying the attempts made
        /// so far, then completes the original. The lock is not held during the backoff (abandoning would redeliver at once and
        /// deferring needs a timer of ours that dies with the process); the broker holds the copy. The copy is sent before the
        /// original is completed: a crash in between duplicates, never loses. A zero delay is sent the same way, so the
        /// entity's MaxDeliveryCount only ever counts crashes and lost locks.
        /// </summary>
        protected override Task RetryAsync(TimeSpan delay, CancellationToken cancellationToken) => SettleAsync(() => SendRetryCopyAsync(delay, cancellationToken));

        private async Task SendRetryCopyAsync(TimeSpan delay, CancellationToken cancellationToken)
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
            return SettleAsync(() => receiver.DeadLetterMessageAsync(received, properties, metadata.Reason.ToString(),
                Clip(metadata.Description ?? metadata.Reason.ToString()), cancellationToken));
        }

        /// <summary>Abandons the message (the broker counts a delivery); after a crash nothing is given back and the lock expires.</summary>
        /// <remarks>Within a session the abandoned message is the session's next one again, ahead of the rest of its key.</remarks>
        protected override Task ReturnAsync(CancellationToken cancellationToken) =>
            owner._crashed ? SettleAsync(() => Task.CompletedTask) : SettleAsync(() => receiver.AbandonMessageAsync(received, cancellationToken: cancellationToken));
    }


    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not renew the lock of message {MessageId} on subscription {Subscription}; trying again at the next renewal")]
    private partial void LogRenewFailed(Exception exception, string? messageId, string subscription);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Accepting a session of subscription {Subscription} failed; trying again in {Delay}")]
    private partial void LogAcceptFailed(Exception exception, string subscription, TimeSpan delay);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Closing the receiver of {Entity} failed")]
    private partial void LogReceiverCloseFailed(Exception exception, string entity);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Service Bus closed receive link {Receiver} of subscription {Subscription}: {Error}; the client attaches it again, and messages it held come back when their locks expire")]
    private partial void LogLinkClosed(string receiver, string subscription, string error);
}
