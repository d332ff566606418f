using System.Collections.Concurrent;
using CloudNative.CloudEvents;
using Grpc.Core;
using Messaging.DeadLetters;
using Messaging.Envelope;
using Messaging.PubSub.Grpc;
using Messaging.Topology;
using Messaging.Transport;
using Microsoft.Extensions.Logging;

namespace Messaging.PubSub;

/// <summary>
/// Consumes one subscription (and its replay subscription) over StreamingPull.
/// <list type="bullet">
/// <item>Flow control: the broker is asked for at most <c>Concurrency + Prefetch</c> outstanding messages, and the
/// consumer stops reading the stream while that many are unsettled (in case the broker does not enforce it).</item>
/// <item>Leases: every received, unsettled message has its ack deadline extended periodically, whether its handler is
/// running or it is waiting for a handler slot, so it is never redelivered behind a running handler.</item>
/// <item>Settlement uses unary Acknowledge / ModifyAckDeadline calls, so completion means the broker accepted it; acks
/// that arrive while an Acknowledge call is in flight share the next call (<see cref="AcknowledgeBatcher"/>).</item>
/// <item>Ordered subscriptions handle the messages of one ordering key one after another.</item>
/// <item>Graceful stop: stop pulling, then let every message already received run to settlement (not only the ones
/// whose handler started), because giving a message back — by a nack or by letting its deadline expire — counts
/// as a delivery attempt on Pub/Sub and would eat into the subscription's maximum attempts. If the stop token
/// fires first, unsettled messages are returned at once (deadline 0).</item>
/// </list>
/// </summary>
internal sealed class PubSubConsumer : ITransportConsumer
{
    private readonly PubSubTransport _transport;
    private readonly SubscriptionDefinition _subscription;
    private readonly DeliveryCallback _onDelivery;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly int _ackDeadlineSeconds;
    private readonly int _maxOutstanding;
    private static readonly TimeSpan StreamDrainTimeout = TimeSpan.FromSeconds(5);
    private readonly string _clientId = Guid.NewGuid().ToString("N");
    private readonly CancellationTokenSource _stopPulling = new();
    private readonly CancellationTokenSource _abortHandlers = new();
    private readonly CancellationTokenSource _stopLeasing = new();
    private readonly CancellationTokenSource _killStreams = new();
    private readonly SemaphoreSlim _handlerSlots;
    private readonly ConcurrentDictionary<string, Delivery> _unsettled = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<Task, byte> _running = new();
    private readonly ConcurrentDictionary<string, int> _localAttempts = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, AcknowledgeBatcher> _acknowledgers = new(StringComparer.Ordinal);
    private readonly Lock _orderingLock = new();
    private readonly Dictionary<string, Task> _orderingTails = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, long> _orderingEpochs = new(StringComparer.Ordinal);
    private readonly List<(string Resource, bool BrokerCountsAttempts)> _sources = [];
    private Task[] _pullLoops = [];
    private Task _leaseLoop = Task.CompletedTask;
    private int _aborted;

    public PubSubConsumer(PubSubTransport transport, SubscriptionDefinition subscription, DeliveryCallback onDelivery, ILogger logger, TimeProvider time)
    {
        _transport = transport;
        _subscription = subscription;
        _onDelivery = onDelivery;
        _logger = logger;
        _time = time;
        _ackDeadlineSeconds = (int)Math.Ceiling(transport.Options.AckDeadline.TotalSeconds);
        _maxOutstanding = transport.Options.MaxOutstandingMessages > 0
            ? transport.Options.MaxOutstandingMessages
            : Math.Max(1, subscription.Concurrency) + Math.Max(0, subscription.Prefetch);
        _handlerSlots = new SemaphoreSlim(Math.Max(1, subscription.Concurrency));
    }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var names = _transport.Names;
        var main = await GetSubscriptionAsync(names.Subscription(_subscription.Name), cancellationToken).ConfigureAwait(false)
            ?? throw new InvalidOperationException(
                $"Pub/Sub subscription '{names.Subscription(_subscription.Name)}' does not exist. Provision it first (Messaging:Provisioning).");
        _sources.Add((main.Name, main.DeadLetterPolicy is not null));
        if (main.DeadLetterPolicy is null)
        {
            _logger.LogWarning(
                "Pub/Sub subscription {Subscription} has no dead-letter policy, so the broker does not count delivery attempts; attempts are counted in this process and restart at 1 after a crash.",
                main.Name);
        }
        var replay = await GetSubscriptionAsync(names.Subscription(PubSubNames.Replay(_subscription.Name)), cancellationToken).ConfigureAwait(false);
        if (replay is not null)
        {
            _sources.Add((replay.Name, replay.DeadLetterPolicy is not null));
        }
        else
        {
            _logger.LogWarning("Pub/Sub replay subscription for {Subscription} does not exist; replayed dead letters will not be received until it is provisioned.", _subscription.Name);
        }
        _pullLoops = _sources.Select(s => Task.Run(() => PullLoopAsync(s.Resource, s.BrokerCountsAttempts))).ToArray();
        _leaseLoop = Task.Run(LeaseLoopAsync);
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
                while (await call.ResponseStream.MoveNext(_killStreams.Token).ConfigureAwait(false))
                {
                    backoff = TimeSpan.FromMilliseconds(200);
                    foreach (var received in call.ResponseStream.Current.ReceivedMessages)
                    {
                        Dispatch(resource, received, brokerCountsAttempts);
                    }
                    // Client-side flow control: stop reading (HTTP/2 then holds the broker back) while enough is unsettled.
                    while (_unsettled.Count >= _maxOutstanding)
                    {
                        await Task.Delay(TimeSpan.FromMilliseconds(20), _time, _killStreams.Token).ConfigureAwait(false);
                    }
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
                var level = PubSubConnection.IsTransient(ex) ? LogLevel.Information : LogLevel.Error;
                _logger.Log(level, ex, "Pub/Sub streaming pull on {Subscription} ended ({Status}); reconnecting in {Delay}.", resource, ex.StatusCode, backoff);
            }
            catch (Exception ex)
            {
                _logger.LogError(ex, "Pub/Sub streaming pull on {Subscription} failed; reconnecting in {Delay}.", resource, backoff);
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

    private void Dispatch(string resource, ReceivedMessage received, bool brokerCountsAttempts)
    {
        var message = received.Message;
        int attempt;
        if (received.DeliveryAttempt > 0)
        {
            attempt = received.DeliveryAttempt;
        }
        else
        {
            // No dead-letter policy, so the broker does not count: count here (does not survive a crash).
            attempt = _localAttempts.AddOrUpdate(message.MessageId, 1, (_, n) => n + 1);
            if (brokerCountsAttempts)
            {
                _logger.LogDebug("Pub/Sub sent no delivery attempt for message {MessageId} on {Subscription}; counted locally.", message.MessageId, resource);
            }
        }
        CloudEvent? cloudEvent = null;
        string? error = null;
        try
        {
            cloudEvent = _transport.Codec.Decode(message);
        }
        catch (InvalidCloudEventException ex)
        {
            error = ex.Message;
        }
        var ordered = _subscription.Ordered && message.OrderingKey.Length > 0;
        var delivery = new Delivery(this, resource, received.AckId, message, cloudEvent, error, attempt,
            ordered ? message.OrderingKey : null, ordered ? _orderingEpochs.GetValueOrDefault(message.OrderingKey) : 0);
        if (!_unsettled.TryAdd(received.AckId, delivery))
        {
            return; // The same lease handed out twice; the first copy is being handled.
        }
        Task task;
        if (delivery.OrderingKey is { } key)
        {
            lock (_orderingLock)
            {
                var previous = _orderingTails.GetValueOrDefault(key) ?? Task.CompletedTask;
                task = RunAfterAsync(previous, delivery);
                _orderingTails[key] = task;
            }
            _ = task.ContinueWith(t =>
            {
                lock (_orderingLock)
                {
                    if (_orderingTails.TryGetValue(key, out var tail) && tail == t)
                    {
                        _orderingTails.Remove(key);
                    }
                }
            }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
        else
        {
            task = Task.Run(() => RunAsync(delivery));
        }
        Track(task);
    }

    private void Track(Task task)
    {
        _running.TryAdd(task, 0);
        _ = task.ContinueWith(t => _running.TryRemove(t, out _), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private static async Task RunAfterAsync(Task previous, Delivery delivery)
    {
        await previous.ConfigureAwait(false); // RunAsync never throws.
        await delivery.Owner.RunAsync(delivery).ConfigureAwait(false);
    }

    private async Task RunAsync(Delivery delivery)
    {
        try
        {
            await _handlerSlots.WaitAsync(_abortHandlers.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            await delivery.ReturnAsync().ConfigureAwait(false);
            return;
        }
        try
        {
            if (delivery.OrderingKey is { } key && _orderingEpochs.GetValueOrDefault(key) != delivery.OrderingEpoch)
            {
                // An earlier message of this key went back for a retry; Pub/Sub redelivers it and everything after
                // it in order, so this copy must not be handled now.
                await delivery.ReturnAsync().ConfigureAwait(false);
                return;
            }
            await _onDelivery(delivery, _abortHandlers.Token).ConfigureAwait(false);
            if (!delivery.IsSettled)
            {
                _logger.LogWarning("A delivery of message {MessageId} on {Subscription} was not settled by its handler; returning it.", delivery.MessageId, _subscription.Name);
                await delivery.ReturnAsync().ConfigureAwait(false);
            }
        }
        catch (Exception ex)
        {
            if (!_abortHandlers.IsCancellationRequested)
            {
                _logger.LogWarning(ex, "Settling message {MessageId} on {Subscription} failed; returning it to Pub/Sub.", delivery.MessageId, _subscription.Name);
            }
            await delivery.ReturnAsync().ConfigureAwait(false);
        }
        finally
        {
            _handlerSlots.Release();
        }
    }

    // ---- leases --------------------------------------------------------------------------------

    private async Task LeaseLoopAsync()
    {
        var interval = TimeSpan.FromSeconds(Math.Max(3, _ackDeadlineSeconds / 3));
        var token = _stopLeasing.Token;
        while (!token.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(interval, _time, token).ConfigureAwait(false);
                foreach (var group in _unsettled.Values.Where(d => !d.IsSettled).GroupBy(d => d.Resource))
                {
                    foreach (var chunk in group.Select(d => d.AckId).Chunk(1000))
                    {
                        var request = new ModifyAckDeadlineRequest { Subscription = group.Key, AckDeadlineSeconds = _ackDeadlineSeconds };
                        request.AckIds.AddRange(chunk);
                        await PubSubConnection.WithRetryAsync(
                            o => _transport.Connection.Subscriber.ModifyAckDeadlineAsync(request, o).ResponseAsync, token).ConfigureAwait(false);
                    }
                }
            }
            catch (Exception) when (token.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                _logger.LogWarning(ex, "Extending Pub/Sub leases on {Subscription} failed; will try again.", _subscription.Name);
            }
        }
    }

    // ---- lifecycle -----------------------------------------------------------------------------

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopPulling.CancelAsync().ConfigureAwait(false);
        try
        {
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
            // Every message already received runs to settlement (see the class remarks for why).
            while (!_running.IsEmpty)
            {
                await Task.WhenAll(_running.Keys.ToArray()).WaitAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            await AbortAsync().ConfigureAwait(false);
            return;
        }
        await _stopLeasing.CancelAsync().ConfigureAwait(false);
        await _leaseLoop.ConfigureAwait(false);
    }

    /// <summary>Stops at once, like a dropped connection: handlers are cancelled and unsettled messages go back.</summary>
    public async Task AbortAsync()
    {
        if (Interlocked.Exchange(ref _aborted, 1) == 1)
        {
            return;
        }
        await _stopPulling.CancelAsync().ConfigureAwait(false);
        await _killStreams.CancelAsync().ConfigureAwait(false);
        await _abortHandlers.CancelAsync().ConfigureAwait(false);
        await _stopLeasing.CancelAsync().ConfigureAwait(false);
        foreach (var group in _unsettled.Values.Where(d => d.TrySettle()).GroupBy(d => d.Resource))
        {
            foreach (var chunk in group.Chunk(1000))
            {
                await ModifyDeadlineQuietlyAsync(group.Key, chunk.Select(d => d.AckId), 0).ConfigureAwait(false);
                foreach (var delivery in chunk)
                {
                    _unsettled.TryRemove(delivery.AckId, out _);
                }
            }
        }
        try
        {
            await Task.WhenAll(_pullLoops.Append(_leaseLoop)).WaitAsync(TimeSpan.FromSeconds(5), _time).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // Best effort: the loops observe the cancellation on their own.
        }
    }

    public async ValueTask DisposeAsync()
    {
        await AbortAsync().ConfigureAwait(false);
        _transport.Remove(this);
    }

    private Task AcknowledgeAsync(string resource, string ackId, CancellationToken cancellationToken) =>
        _acknowledgers.GetOrAdd(resource, static (r, connection) => new AcknowledgeBatcher(connection, r), _transport.Connection)
            .AcknowledgeAsync(ackId, cancellationToken);

    private async Task ModifyDeadlineQuietlyAsync(string resource, IEnumerable<string> ackIds, int seconds)
    {
        var request = new ModifyAckDeadlineRequest { Subscription = resource, AckDeadlineSeconds = seconds };
        request.AckIds.AddRange(ackIds);
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10), _time);
            await _transport.Connection.Subscriber.ModifyAckDeadlineAsync(request, PubSubConnection.Call(timeout.Token)).ResponseAsync.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is RpcException or OperationCanceledException)
        {
            // The lease then simply expires and Pub/Sub redelivers the message.
            _logger.LogDebug(ex, "Returning {Count} message(s) to {Subscription} failed; they come back when their lease expires.", request.AckIds.Count, resource);
        }
    }

    private sealed class Delivery(
        PubSubConsumer owner, string resource, string ackId, PubsubMessage message, CloudEvent? cloudEvent, string? error,
        int attempt, string? orderingKey, long orderingEpoch) : ITransportDelivery
    {
        private int _settled;

        public PubSubConsumer Owner => owner;

        public string Resource => resource;

        public string AckId => ackId;

        public string? OrderingKey => orderingKey;

        public long OrderingEpoch => orderingEpoch;

        public CloudEvent? Event => cloudEvent;

        public string? DecodeError => error;

        public int Attempt => attempt;

        public string Subscription => owner._subscription.Name;

        public string? MessageId => message.MessageId;

        public bool IsSettled => Volatile.Read(ref _settled) == 1;

        public bool TrySettle() => Interlocked.Exchange(ref _settled, 1) == 0;

        public async Task CompleteAsync(CancellationToken cancellationToken)
        {
            if (!TrySettle())
            {
                return;
            }
            try
            {
                await owner.AcknowledgeAsync(resource, ackId, cancellationToken).ConfigureAwait(false);
                owner._localAttempts.TryRemove(message.MessageId, out _);
            }
            finally
            {
                owner._unsettled.TryRemove(ackId, out _);
            }
        }

        public async Task RetryAsync(TimeSpan delay, CancellationToken cancellationToken)
        {
            if (!TrySettle())
            {
                return;
            }
            if (orderingKey is not null)
            {
                owner._orderingEpochs.AddOrUpdate(orderingKey, 1, (_, e) => e + 1);
            }
            // The broker owns the delay: the message becomes deliverable again when the new deadline passes
            // (whole seconds, rounded up; Pub/Sub allows at most 10 minutes), which also counts one more attempt.
            var seconds = delay <= TimeSpan.Zero ? 0 : (int)Math.Min(600, Math.Ceiling(delay.TotalSeconds));
            try
            {
                var request = new ModifyAckDeadlineRequest { Subscription = resource, AckDeadlineSeconds = seconds };
                request.AckIds.Add(ackId);
                await PubSubConnection.WithRetryAsync(
                    o => owner._transport.Connection.Subscriber.ModifyAckDeadlineAsync(request, o).ResponseAsync, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                owner._unsettled.TryRemove(ackId, out _);
            }
        }

        public async Task DeadLetterAsync(DeadLetterMetadata metadata, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(metadata);
            if (!TrySettle())
            {
                return;
            }
            try
            {
                var copy = new PubsubMessage { Data = message.Data, OrderingKey = message.OrderingKey };
                foreach (var (key, value) in message.Attributes)
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
                var topic = owner._transport.Names.Topic(PubSubNames.DeadLetter(owner._subscription.Name));
                await owner._transport.PublishMessagesAsync(topic, [copy], cancellationToken).ConfigureAwait(false);
                await owner.AcknowledgeAsync(resource, ackId, cancellationToken).ConfigureAwait(false);
                owner._localAttempts.TryRemove(message.MessageId, out _);
            }
            catch (Exception)
            {
                // Not moved: give the message back rather than lose it.
                await owner.ModifyDeadlineQuietlyAsync(resource, [ackId], 0).ConfigureAwait(false);
                throw;
            }
            finally
            {
                owner._unsettled.TryRemove(ackId, out _);
            }
        }

        /// <summary>Gives the message back unsettled (deadline 0), as a broker does when a consumer's connection drops.</summary>
        public async Task ReturnAsync()
        {
            if (!TrySettle())
            {
                return;
            }
            try
            {
                await owner.ModifyDeadlineQuietlyAsync(resource, [ackId], 0).ConfigureAwait(false);
            }
            finally
            {
                owner._unsettled.TryRemove(ackId, out _);
            }
        }
    }
}
