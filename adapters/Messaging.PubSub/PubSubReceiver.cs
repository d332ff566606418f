using System.Collections.Concurrent;
using CloudNative.CloudEvents;
using Grpc.Core;
using Messaging.DeadLetters;
using Messaging.PubSub.Grpc;
using Messaging.Transport;
using GrpcReceivedMessage = Messaging.PubSub.Grpc.ReceivedMessage;
using ReceivedMessage = Messaging.Transport.ReceivedMessage;
using Microsoft.Extensions.Logging;

namespace Messaging.PubSub;

/// <summary>
/// Pub/Sub's receive loops for one subscription (and its replay subscription), over StreamingPull. Everything between
/// receiving and settling is the <see cref="ReceivePipeline"/>'s; this class is the broker's side of it:
/// <list type="bullet">
/// <item>Flow control: the broker is asked for at most <c>Concurrency + Prefetch</c> outstanding messages; the stream is always
/// read, so that every message sent is held with its lease renewed rather than left to expire unread.</item>
/// <item>Leases: the pipeline has every held message's ack deadline extended, whether its handler runs or it waits.</item>
/// <item>Settlement uses unary Acknowledge / ModifyAckDeadline calls, so completion means the broker accepted it; acks that
/// arrive while an Acknowledge call is in flight share the next call (<see cref="AcknowledgeBatcher"/>).</item>
/// <item>Giving back: an ordering key's messages go back together, in one <c>ModifyAckDeadline</c> call with their ack ids in
/// arrival order (<see cref="ReturnsTogether"/>).</item>
/// <item>Graceful stop: stop pulling, then every message already received runs to settlement, because giving a message back
/// (a nack, or a deadline left to expire) counts as a delivery attempt on Pub/Sub.</item>
/// </list>
/// </summary>
internal sealed partial class PubSubReceiver : ITransportReceiver
{
    private static readonly TimeSpan StreamDrainTimeout = TimeSpan.FromSeconds(5);

    /// <summary>How long a new stream stays open before receiving counts as working again (a stream refused fails sooner).</summary>
    private static readonly TimeSpan StreamOpenAfter = TimeSpan.FromSeconds(2);
    private readonly PubSubTransport _transport;
    private readonly ReceivePipeline _pipeline;
    private readonly string _subscription;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly int _ackDeadlineSeconds;
    private readonly int _maxOutstanding;
    private readonly string _clientId = Guid.NewGuid().ToString("N");
    private readonly CancellationTokenSource _stopPulling = new();
    private readonly CancellationTokenSource _killStreams = new();
    private readonly ConcurrentDictionary<string, byte> _held = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int> _localAttempts = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, AcknowledgeBatcher> _acknowledgers = new(StringComparer.Ordinal);
    private readonly List<(string Resource, bool BrokerCountsAttempts)> _sources = [];
    private Task[] _pullLoops = [];
    private int _disposed;

    public PubSubReceiver(PubSubTransport transport, ReceivePipeline pipeline, ILogger logger)
    {
        _transport = transport;
        _pipeline = pipeline;
        _subscription = pipeline.Subscription.Name;
        _logger = logger;
        _time = pipeline.Time;
        _ackDeadlineSeconds = (int)Math.Ceiling(transport.Options.AckDeadline.TotalSeconds);
        _maxOutstanding = transport.Options.MaxOutstandingMessages > 0 ? transport.Options.MaxOutstandingMessages : pipeline.Capacity;
    }

    /// <summary>The subscription received (its name in the topology).</summary>
    internal string Subscription => _subscription;

    public StopBehavior StopBehavior => StopBehavior.HandleReceived;

    public TimeSpan? LeaseRenewalInterval => TimeSpan.FromSeconds(Math.Max(3, _ackDeadlineSeconds / 3));

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var names = _transport.Names;
        var main = await GetSubscriptionAsync(names.Subscription(_subscription), cancellationToken).ConfigureAwait(false)
            ?? throw new InvalidOperationException(
                $"Pub/Sub subscription '{names.Subscription(_subscription)}' does not exist. Provision it first (Messaging:Provisioning).");
        _sources.Add((main.Name, main.DeadLetterPolicy is not null));
        if (main.DeadLetterPolicy is null)
        {
            LogAttemptsCountedLocally(main.Name);
        }
        // Checked here only to warn early; each dead letter checks again (PubSubTransport.EnsureDeadLetterSubscriptionAsync).
        var deadLetter = names.Subscription(PubSubNames.DeadLetter(_subscription));
        if (await GetSubscriptionAsync(deadLetter, cancellationToken).ConfigureAwait(false) is null)
        {
            LogNoDeadLetterSubscription(_subscription, deadLetter);
        }
        var replay = await GetSubscriptionAsync(names.Subscription(PubSubNames.Replay(_subscription)), cancellationToken).ConfigureAwait(false);
        if (replay is not null)
        {
            _sources.Add((replay.Name, replay.DeadLetterPolicy is not null));
        }
        else
        {
            LogNoReplaySubscription(_subscription);
        }
        _pullLoops = _sources.Select(s => Task.Run(() => PullLoopAsync(s.Resource, s.BrokerCountsAttempts))).ToArray();
    }

    private async Task<Subscription?> GetSubscriptionAsync(string resource, CancellationToken cancellationToken)
    {
        try
        {
            return await PubSubConnection.WithRetryAsync(
                o => _transport.Connection.Subscriber.GetSubscriptionAsync(new GetSubscriptionRequest { Subscription = resource }, o).ResponseAsync,
                cancellationToken).ConfigureAwait(false);
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.NotFound)
        {
            return null;
        }
    }

    // ---- receiving -----------------------------------------------------------------------------

    private async Task PullLoopAsync(string resource, bool brokerCountsAttempts)
    {
        var token = _stopPulling.Token;
        var backoff = TimeSpan.FromMilliseconds(200);
        while (!token.IsCancellationRequested)
        {
            using var streamOpen = new CancellationTokenSource();
            try
            {
                // The call lives until the broker closes it after our half-close (graceful stop), or until it is killed.
                using var call = _transport.Connection.Subscriber.StreamingPull(cancellationToken: _killStreams.Token);
                await call.RequestStream.WriteAsync(new StreamingPullRequest
                {
                    Subscription = resource,
                    StreamAckDeadlineSeconds = _ackDeadlineSeconds,
                    ClientId = _clientId,
                    MaxOutstandingMessages = _maxOutstanding,
                    MaxOutstandingBytes = _transport.Options.MaxOutstandingBytes,
                }, token).ConfigureAwait(false);
                // Stopping half-closes the stream instead of cutting it: the broker then stops sending and ends it, and
                // whatever it had already sent is still read and handled rather than left to expire (which would
                // cost each such message a delivery attempt).
                using var halfClose = token.Register(() => _ = HalfCloseAsync(call.RequestStream));
                // A stream that stays open is reading again, whether or not messages come.
                _ = ReportStreamOpenAsync(resource, streamOpen.Token);
                while (await call.ResponseStream.MoveNext(_killStreams.Token).ConfigureAwait(false))
                {
                    backoff = TimeSpan.FromMilliseconds(200);
                    _pipeline.ReportReceiveRecovered(resource);
                    var response = call.ResponseStream.Current.ReceivedMessages;
                    var batch = new List<ReceivedMessage>(response.Count);
                    foreach (var received in response)
                    {
                        if (_held.TryAdd(received.AckId, 0))
                        {
                            batch.Add(new Message(this, resource, received, brokerCountsAttempts));
                        }
                        // Otherwise the same lease was handed out twice; the first copy is being handled.
                    }
                    // As one receive: every message of the response takes its key's place before any of them starts.
                    _pipeline.SubmitAll(batch);
                    // No client-side flow control by not reading: a message left unread in the stream's buffers cannot have its
                    // lease extended, so it expires and comes again, each time as one more delivery attempt, until Pub/Sub's
                    // dead-letter policy takes it (seen in the torture run on the emulator, which does not hold back at
                    // MaxOutstandingMessages). Every message read is held by the pipeline, which renews its lease until a
                    // handler takes it; the service itself stops sending at MaxOutstandingMessages/Bytes.
                }
                if (token.IsCancellationRequested)
                {
                    return;
                }
                // The broker closed the stream (it does so to rebalance): open a new one.
            }
            catch (Exception) when (token.IsCancellationRequested)
            {
                return;
            }
            catch (RpcException ex)
            {
                await streamOpen.CancelAsync().ConfigureAwait(false);
                _pipeline.ReportReceiveFailing($"the streaming pull ended: {ex.StatusCode} {ex.Status.Detail}", resource);
                // A stream cut by the broker or the network (a clean close, above, is the broker's routine rebalancing): the
                // consumer notices and reconnects, and says so at Warning, so a flapping connection is seen.
                LogStreamEnded(PubSubConnection.IsTransient(ex) ? LogLevel.Warning : LogLevel.Error, ex, resource, ex.StatusCode, backoff);
            }
            catch (Exception ex)
            {
                await streamOpen.CancelAsync().ConfigureAwait(false);
                _pipeline.ReportReceiveFailing($"the streaming pull failed: {ex.GetType().Name}: {ex.Message}", resource);
                LogStreamFailed(ex, resource, backoff);
            }
            try
            {
                await Task.Delay(backoff, _time, token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, TimeSpan.FromSeconds(10).Ticks));
        }
    }

    /// <summary>Reports receiving from <paramref name="resource"/> working again once a new stream has stayed open a moment.</summary>
    private async Task ReportStreamOpenAsync(string resource, CancellationToken streamEnded)
    {
        try
        {
            await Task.Delay(StreamOpenAfter, _time, streamEnded).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        _pipeline.ReportReceiveRecovered(resource);
    }

    private static async Task HalfCloseAsync(IClientStreamWriter<StreamingPullRequest> requests)
    {
        try
        {
            await requests.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is RpcException or InvalidOperationException or OperationCanceledException)
        {
            // The stream is already gone.
        }
    }

    // ---- leases --------------------------------------------------------------------------------

    /// <summary>
    /// Extends the deadlines of held messages, up to 1,000 per call and the calls in parallel: a backlog of thousands held at
    /// once (the emulator does not stop at MaxOutstandingMessages) must be renewed within one renewal interval.
    /// </summary>
    public async Task RenewLeasesAsync(IReadOnlyList<ReceivedMessage> messages, CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        var calls = new List<Task>();
        foreach (var group in messages.Cast<Message>().GroupBy(m => m.Resource))
        {
            foreach (var chunk in group.Chunk(1000))
            {
                calls.Add(RenewAsync(group.Key, chunk, now, cancellationToken));
            }
        }
        await Task.WhenAll(calls).ConfigureAwait(false);
    }

    private async Task RenewAsync(string resource, Message[] chunk, DateTimeOffset now, CancellationToken cancellationToken)
    {
        var request = new ModifyAckDeadlineRequest { Subscription = resource, AckDeadlineSeconds = _ackDeadlineSeconds };
        request.AckIds.AddRange(chunk.Select(m => m.AckId));
        await PubSubConnection.WithRetryAsync(
            o => _transport.Connection.Subscriber.ModifyAckDeadlineAsync(request, o).ResponseAsync, cancellationToken).ConfigureAwait(false);
        foreach (var message in chunk)
        {
            message.LeasedAt = now;
        }
    }

    // ---- lifecycle -----------------------------------------------------------------------------

    public async Task StopReceivingAsync(CancellationToken cancellationToken)
    {
        await _stopPulling.CancelAsync().ConfigureAwait(false);
        try
        {
            await Task.WhenAll(_pullLoops).WaitAsync(StreamDrainTimeout, _time, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // The broker did not end the stream after our half-close: cut it.
            await _killStreams.CancelAsync().ConfigureAwait(false);
            await Task.WhenAll(_pullLoops).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public Task DrainedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Pub/Sub goes on with an ordering key as soon as some of its messages are back: given back one call after the other,
    /// a key's later messages reached another consumer while an earlier one was still leased here (seen on the emulator after
    /// a consumer was killed). One <c>ModifyAckDeadline</c> call takes up to 1,000 of them.
    /// </summary>
    public bool ReturnsTogether => true;

    /// <summary>
    /// Gives a key's messages back with as few <c>ModifyAckDeadline</c> calls as it takes (one per subscription and deadline,
    /// up to 1,000 ack ids each), ack ids in arrival order, each call answered before the next. A failed call ends it: the
    /// messages not yet given back return when their leases expire, rather than ahead of one still leased.
    /// </summary>
    public async Task ReturnTogetherAsync(IReadOnlyList<ReceivedMessage> messages, CancellationToken cancellationToken)
    {
        try
        {
            var next = 0;
            while (next < messages.Count)
            {
                var first = (Message)messages[next];
                var request = new ModifyAckDeadlineRequest { Subscription = first.Resource, AckDeadlineSeconds = first.ReturnDeadlineSeconds };
                while (next < messages.Count && request.AckIds.Count < 1000 && messages[next] is Message message
                    && message.Resource == request.Subscription && message.ReturnDeadlineSeconds == request.AckDeadlineSeconds)
                {
                    request.AckIds.Add(message.AckId);
                    next++;
                }
                await _transport.Connection.Subscriber.ModifyAckDeadlineAsync(request, PubSubConnection.Call(cancellationToken)).ResponseAsync.ConfigureAwait(false);
            }
        }
        finally
        {
            foreach (var message in messages)
            {
                _held.TryRemove(((Message)message).AckId, out _);
            }
        }
    }

    /// <summary>Like a dropped connection: streams are cut, handlers are cancelled and unsettled messages go back (deadline 0).</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }
        _transport.Remove(this);
        await _stopPulling.CancelAsync().ConfigureAwait(false);
        await _killStreams.CancelAsync().ConfigureAwait(false);
        await _pipeline.AbortAsync().ConfigureAwait(false);
        try
        {
            await Task.WhenAll(_pullLoops).WaitAsync(TimeSpan.FromSeconds(5), _time).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // Best effort: the loops observe the cancellation on their own.
        }
    }

    private Task AcknowledgeAsync(string resource, string ackId, CancellationToken cancellationToken) =>
        _acknowledgers.GetOrAdd(resource, static (r, connection) => new AcknowledgeBatcher(connection, r), _transport.Connection)
            .AcknowledgeAsync(ackId, cancellationToken);

    private async Task ModifyDeadlineAsync(string resource, string ackId, int seconds, CancellationToken cancellationToken)
    {
        var request = new ModifyAckDeadlineRequest { Subscription = resource, AckDeadlineSeconds = seconds };
        request.AckIds.Add(ackId);
        await PubSubConnection.WithRetryAsync(
            o => _transport.Connection.Subscriber.ModifyAckDeadlineAsync(request, o).ResponseAsync, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>One received message: its wire mapping and settlement primitives.</summary>
    private sealed class Message(PubSubReceiver owner, string resource, GrpcReceivedMessage received, bool brokerCountsAttempts) : ReceivedMessage
    {
        private readonly PubsubMessage _message = received.Message;
        private bool _deadLetterFailed;

        public string Resource => resource;

        public string AckId => received.AckId;

        /// <summary>
        /// The deadline a return sets: 0, as a broker does when a consumer's connection drops, or after a failed dead-letter
        /// settlement a full ack deadline, so that it does not come straight back, fail and come back in a tight loop, each
        /// round costing a delivery attempt (once the broker's own dead-letter policy runs out of them, it forwards the message
        /// to the dead-letter topic, which may have no subscription).
        /// </summary>
        public int ReturnDeadlineSeconds => _deadLetterFailed ? owner._ackDeadlineSeconds : 0;

        public override string? MessageId => _message.MessageId;

        protected override string? OrderingKey => _message.OrderingKey is { Length: > 0 } key ? key : null;

        protected override int ReadAttempt()
        {
            if (received.DeliveryAttempt > 0)
            {
                return received.DeliveryAttempt;
            }
            // No dead-letter policy, so the broker does not count: count here (does not survive a crash).
            if (brokerCountsAttempts)
            {
                owner.LogNoDeliveryAttempt(_message.MessageId, resource);
            }
            return owner._localAttempts.AddOrUpdate(_message.MessageId, 1, (_, n) => n + 1);
        }

        protected override CloudEvent Decode() => owner._transport.Codec.Decode(_message);

        protected override async Task CompleteAsync(CancellationToken cancellationToken)
        {
            try
            {
                await owner.AcknowledgeAsync(resource, AckId, cancellationToken).ConfigureAwait(false);
                owner._localAttempts.TryRemove(_message.MessageId, out _);
            }
            finally
            {
                owner._held.TryRemove(AckId, out _);
            }
        }

        /// <summary>
        /// The broker owns the delay: the message becomes deliverable again when the new deadline passes (whole seconds,
        /// rounded up; Pub/Sub allows at most 10 minutes), which also counts one more attempt.
        /// </summary>
        protected override async Task RetryAsync(TimeSpan delay, CancellationToken cancellationToken)
        {
            var seconds = delay <= TimeSpan.Zero ? 0 : (int)Math.Min(600, Math.Ceiling(delay.TotalSeconds));
            try
            {
                await owner.ModifyDeadlineAsync(resource, AckId, seconds, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                owner._held.TryRemove(AckId, out _);
            }
        }

        protected override async Task DeadLetterAsync(DeadLetterMetadata metadata, CancellationToken cancellationToken)
        {
            try
            {
                await DeadLetterCoreAsync(metadata, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception) when (!cancellationToken.IsCancellationRequested)
            {
                // Not a stop: the dead-letter destination failed, so ask about it again next time and give the message back late.
                _deadLetterFailed = true;
                owner._transport.ForgetDeadLetterSubscription(owner._subscription);
                throw;
            }
        }

        private async Task DeadLetterCoreAsync(DeadLetterMetadata metadata, CancellationToken cancellationToken)
        {
            // Before anything is published or acknowledged: without a subscription on the dead-letter topic the copy would
            // be dropped, so the settlement fails and the pipeline gives the original back instead.
            await owner._transport.EnsureDeadLetterSubscriptionAsync(owner._subscription, cancellationToken).ConfigureAwait(false);
            var copy = new PubsubMessage { Data = _message.Data, OrderingKey = _message.OrderingKey };
            foreach (var (key, value) in _message.Attributes)
            {
                if (!PubSubTransport.IsDeadLetterAttribute(key))
                {
                    copy.Attributes[key] = value;
                }
            }
            foreach (var (key, value) in metadata.ToProperties())
            {
                copy.Attributes[key] = PubSubTransport.ClipAttributeValue(value);
            }
            var topic = owner._transport.Names.Topic(PubSubNames.DeadLetter(owner._subscription));
            await owner._transport.PublishMessagesAsync(topic, [copy], cancellationToken).ConfigureAwait(false);
            await owner.AcknowledgeAsync(resource, AckId, cancellationToken).ConfigureAwait(false);
            owner._localAttempts.TryRemove(_message.MessageId, out _);
            owner._held.TryRemove(AckId, out _);
        }

        /// <summary>Gives the message back (see <see cref="ReturnDeadlineSeconds"/>).</summary>
        protected override async Task ReturnAsync(CancellationToken cancellationToken)
        {
            try
            {
                var request = new ModifyAckDeadlineRequest { Subscription = resource, AckDeadlineSeconds = ReturnDeadlineSeconds };
                request.AckIds.Add(AckId);
                await owner._transport.Connection.Subscriber.ModifyAckDeadlineAsync(request, PubSubConnection.Call(cancellationToken)).ResponseAsync.ConfigureAwait(false);
            }
            finally
            {
                owner._held.TryRemove(AckId, out _);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Pub/Sub subscription {Subscription} has no dead-letter policy, so the broker does not count delivery attempts; attempts are counted in this process and restart at 1 after a crash.")]
    private partial void LogAttemptsCountedLocally(string subscription);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Pub/Sub dead-letter subscription {DeadLetterSubscription} of {Subscription} does not exist; until it does, messages to dead-letter are given back instead of stored (provision it: Messaging:Provisioning).")]
    private partial void LogNoDeadLetterSubscription(string subscription, string deadLetterSubscription);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Pub/Sub replay subscription for {Subscription} does not exist; replayed dead letters will not be received until it is provisioned.")]
    private partial void LogNoReplaySubscription(string subscription);

    [LoggerMessage(Message = "Pub/Sub streaming pull on {Subscription} ended ({Status}); reconnecting in {Delay}.")]
    private partial void LogStreamEnded(LogLevel level, Exception exception, string subscription, StatusCode status, TimeSpan delay);

    [LoggerMessage(Level = LogLevel.Error, Message = "Pub/Sub streaming pull on {Subscription} failed; reconnecting in {Delay}.")]
    private partial void LogStreamFailed(Exception exception, string subscription, TimeSpan delay);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Pub/Sub sent no delivery attempt for message {MessageId} on {Subscription}; counted locally.")]
    private partial void LogNoDeliveryAttempt(string messageId, string subscription);
}
