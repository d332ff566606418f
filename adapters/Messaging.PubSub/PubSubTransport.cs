using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using CloudNative.CloudEvents;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Messaging.DeadLetters;
using Messaging.Envelope;
using Messaging.PubSub.Grpc;
using Messaging.Topology;
using Messaging.Transport;
using ReceivedMessage = Messaging.PubSub.Grpc.ReceivedMessage;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Messaging.PubSub;

/// <summary>
/// The Google Cloud Pub/Sub transport. Topics map to topics and subscriptions to subscriptions (fan-out and competing
/// consumers are native). Each subscription gets a dead-letter topic with one subscription (<c>{name}.dead-letter</c>)
/// that holds its dead letters, and a replay topic with one subscription (<c>{name}.replay</c>) that the consumer also
/// reads, so a replayed dead letter reaches only its own subscription (publishing it to the original topic would fan
/// it out to every other subscription too). Delivery attempts come from Pub/Sub's <c>delivery_attempt</c>, which the
/// broker only counts on subscriptions with a dead-letter policy; every subscription is therefore created with one,
/// set to <c>max(5, MaxAttempts)</c> (Pub/Sub's minimum is 5) as a safety net for consumers that crash, while the
/// contract layer dead-letters explicitly, with metadata, at the configured maximum.
/// </summary>
public sealed partial class PubSubTransport : IMessageTransport, IDeadLetterStore
{
    /// <summary>The name that selects this transport in configuration.</summary>
    public const string TransportName = "PubSub";

    /// <summary>Attributes Pub/Sub itself adds when its dead-letter policy forwards a message.</summary>
    private const string BrokerDeadLetterPrefix = "CloudPubSubDeadLetter";
    private const string BrokerDeliveryCountAttribute = "CloudPubSubDeadLetterSourceDeliveryCount";
    private const int MaxAttributeValueBytes = 1024;
    private static readonly TimeSpan DeadLetterAckDeadline = TimeSpan.FromSeconds(60);

    /// <summary>How long a positive answer about a dead-letter subscription is trusted before it is asked again.</summary>
    private static readonly TimeSpan DeadLetterCheckInterval = TimeSpan.FromMinutes(1);

    /// <summary>The deadline of the health check's one call.</summary>
    private static readonly TimeSpan HealthCallTimeout = TimeSpan.FromSeconds(5);

    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, TopicPublisher> _publishers = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<PubSubReceiver, byte> _receivers = new();
    private readonly ConcurrentDictionary<string, DateTimeOffset> _deadLetterSubscriptionSeen = new(StringComparer.Ordinal);
    private int _disposed;

    /// <summary>
    /// Creates the transport. The gRPC channel is set up here but connects on first use, to the emulator when
    /// <see cref="PubSubTransportOptions.EmulatorHost"/> (or <c>PUBSUB_EMULATOR_HOST</c>) is set, else to Pub/Sub with
    /// Google application default credentials.
    /// </summary>
    /// <param name="options">Project, endpoint, batching, flow control and dead-letter settings (<c>Messaging:PubSub</c>).</param>
    /// <param name="extensionAttributes">Declared extension attributes, read back with their types.</param>
    /// <param name="logger">For the transport's warnings; none when null.</param>
    /// <param name="time">The clock for deadlines and dead-letter times; the system clock when null.</param>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is null.</exception>
    /// <exception cref="ArgumentException">The options are invalid (no project id, a limit out of range, ...); the message lists every problem.</exception>
    public PubSubTransport(PubSubTransportOptions options, IReadOnlyList<CloudEventAttribute> extensionAttributes, ILogger<PubSubTransport>? logger = null, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var problems = PubSubOptionsValidator.Problems(options);
        if (problems.Count > 0)
        {
            throw new ArgumentException(string.Join(" ", problems), nameof(options));
        }
        Options = options;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
        _time = time ?? TimeProvider.System;
        Names = new PubSubNames(options.ProjectId!);
        Codec = new PubSubCodec(options.ContentMode, options.MaxEventSizeBytes, extensionAttributes ?? []);
        Connection = new PubSubConnection(options);
        Capabilities = new TransportCapabilities
        {
            MaxEventSizeBytes = options.MaxEventSizeBytes,
            OrderingKeys = true,
            // The emulator keeps topics, subscriptions and messages in memory only; the service itself does not restart.
            SurvivesBrokerRestart = options.ResolveEmulatorHost() is null,
            // Deadlines are extended in batches that succeed as a whole: an expired lease is not reported, the message
            // simply comes back (and the late acknowledgement is ignored).
            ReportsLostLeases = false,
        };
    }

    /// <inheritdoc />
    public string Name => TransportName;

    /// <inheritdoc />
    public TransportCapabilities Capabilities { get; }

    /// <inheritdoc />
    public IDeadLetterStore DeadLetters => this;

    /// <summary>Pub/Sub's retryable status codes (unavailable, deadline exceeded, resource exhausted, ...), and timeouts.</summary>
    public bool IsTransient(Exception exception) => exception switch
    {
        RpcException rpc => PubSubConnection.IsTransient(rpc),
        TimeoutException or IOException or HttpRequestException => true,
        _ => false,
    };

    internal PubSubTransportOptions Options { get; }

    internal PubSubNames Names { get; }

    internal PubSubCodec Codec { get; }

    internal PubSubConnection Connection { get; }

    // ---- provisioning --------------------------------------------------------------------------

    /// <inheritdoc />
    public async Task ProvisionAsync(MessagingTopology topology, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(topology);
        ThrowIfDisposed();
        var topics = topology.Topics.Concat(topology.Subscriptions.Select(s => s.Topic)).Distinct(StringComparer.Ordinal);
        foreach (var topic in topics)
        {
            await CreateTopicAsync(Names.Topic(topic), cancellationToken).ConfigureAwait(false);
        }
        foreach (var subscription in topology.Subscriptions)
        {
            var deadLetter = PubSubNames.DeadLetter(subscription.Name);
            var replay = PubSubNames.Replay(subscription.Name);
            await CreateTopicAsync(Names.Topic(deadLetter), cancellationToken).ConfigureAwait(false);
            await CreateTopicAsync(Names.Topic(replay), cancellationToken).ConfigureAwait(false);
            await CreateSubscriptionAsync(new Grpc.Subscription
            {
                Name = Names.Subscription(deadLetter),
                Topic = Names.Topic(deadLetter),
                AckDeadlineSeconds = (int)DeadLetterAckDeadline.TotalSeconds,
                MessageRetentionDuration = Duration.FromTimeSpan(Options.DeadLetterRetention),
                // No TTL: never expires, although nothing consumes it (Pub/Sub's default deletes it after 31 idle days).
                ExpirationPolicy = new ExpirationPolicy(),
            }, cancellationToken).ConfigureAwait(false);
            foreach (var (name, topic) in new[] { (subscription.Name, subscription.Topic), (replay, replay) })
            {
                await CreateSubscriptionAsync(new Grpc.Subscription
                {
                    Name = Names.Subscription(name),
                    Topic = Names.Topic(topic),
                    AckDeadlineSeconds = (int)Math.Ceiling(Options.AckDeadline.TotalSeconds),
                    EnableMessageOrdering = subscription.Ordered,
                    ExpirationPolicy = new ExpirationPolicy(),
                    DeadLetterPolicy = new DeadLetterPolicy
                    {
                        DeadLetterTopic = Names.Topic(deadLetter),
                        MaxDeliveryAttempts = Math.Clamp(subscription.Retry.MaxAttempts + Options.CrashRedeliveryAllowance, 5, 100),
                    },
                }, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private async Task CreateTopicAsync(string resource, CancellationToken cancellationToken)
    {
        try
        {
            await PubSubConnection.WithRetryAsync(
                o => Connection.Publisher.CreateTopicAsync(new Topic { Name = resource }, o).ResponseAsync, cancellationToken).ConfigureAwait(false);
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.AlreadyExists)
        {
            // Idempotent.
        }
    }

    private async Task CreateSubscriptionAsync(Grpc.Subscription wanted, CancellationToken cancellationToken)
    {
        try
        {
            await PubSubConnection.WithRetryAsync(
                o => Connection.Subscriber.CreateSubscriptionAsync(wanted, o).ResponseAsync, cancellationToken).ConfigureAwait(false);
            return;
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.AlreadyExists)
        {
            // Exists: check what cannot be changed after creation.
        }
        var existing = await PubSubConnection.WithRetryAsync(
            o => Connection.Subscriber.GetSubscriptionAsync(new GetSubscriptionRequest { Subscription = wanted.Name }, o).ResponseAsync,
            cancellationToken).ConfigureAwait(false);
        if (!string.Equals(existing.Topic, wanted.Topic, StringComparison.Ordinal))
        {
            throw new InvalidOperationException(
                $"Pub/Sub subscription '{wanted.Name}' already exists on topic '{existing.Topic}', not '{wanted.Topic}'. Delete it or choose another subscription name.");
        }
        if (existing.EnableMessageOrdering != wanted.EnableMessageOrdering)
        {
            throw new InvalidOperationException(
                $"Pub/Sub subscription '{wanted.Name}' already exists with message ordering {(existing.EnableMessageOrdering ? "enabled" : "disabled")}; " +
                "Pub/Sub cannot change that on an existing subscription. Delete it (its backlog is lost) or keep the old setting.");
        }
        if (wanted.DeadLetterPolicy is not null
            && (existing.DeadLetterPolicy is null || existing.DeadLetterPolicy.DeadLetterTopic != wanted.DeadLetterPolicy.DeadLetterTopic))
        {
            LogNoDeadLetterPolicy(wanted.Name, wanted.DeadLetterPolicy.DeadLetterTopic);
        }
        // Both can be changed in place, but like every other setting of an existing subscription they are left as they are
        // (someone may have chosen them): the warnings say what differs.
        if (wanted.MessageRetentionDuration is { } retention && existing.MessageRetentionDuration is { } kept && kept.ToTimeSpan() != retention.ToTimeSpan())
        {
            LogOtherRetention(wanted.Name, kept.ToTimeSpan(), retention.ToTimeSpan());
        }
        if (wanted.ExpirationPolicy is { Ttl: null } && existing.ExpirationPolicy?.Ttl is { } ttl)
        {
            LogSubscriptionExpires(wanted.Name, ttl.ToTimeSpan());
        }
    }

    // ---- publishing ----------------------------------------------------------------------------

    /// <summary>
    /// Encodes every event first (so an invalid or too large one publishes nothing of the list), then publishes them through
    /// the topic's batching queue and completes once Pub/Sub has stored every one.
    /// </summary>
    /// <exception cref="Messaging.Envelope.EventTooLargeException">An event is larger than <see cref="PubSubTransportOptions.MaxEventSizeBytes"/>.</exception>
    /// <exception cref="OrderingKeyPausedException">An earlier publish of the event's ordering key to this topic failed; see <see cref="ResumePublish"/>.</exception>
    /// <exception cref="Messaging.Publishing.EventPublishException">Pub/Sub refused the publish or did not answer in time.</exception>
    /// <exception cref="ObjectDisposedException">The transport was disposed.</exception>
    public async Task PublishAsync(string topic, IReadOnlyList<CloudEvent> events, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(topic);
        ArgumentNullException.ThrowIfNull(events);
        ThrowIfDisposed();
        // Encode everything first, so a too-large or invalid event publishes nothing of the list.
        var messages = new PubsubMessage[events.Count];
        var sizes = new long[events.Count];
        for (var i = 0; i < messages.Length; i++)
        {
            messages[i] = Codec.Encode(events[i], out sizes[i]);
        }
        // Queued in order, so messages of one ordering key keep their order.
        await PublisherOf(topic).PublishAsync(messages, cancellationToken, pausesOrderingKeys: true, sizes).ConfigureAwait(false);
    }

    // The application's topics by their short names: no resource name is formatted, and no delegate made, per publish.
    private readonly ConcurrentDictionary<string, TopicPublisher> _publishersByTopic = new(StringComparer.Ordinal);

    private TopicPublisher PublisherOf(string topic)
    {
        if (_publishersByTopic.TryGetValue(topic, out var publisher))
        {
            return publisher;
        }
        return _publishersByTopic.GetOrAdd(topic, PublisherFor(Names.Topic(topic)));
    }

    private TopicPublisher PublisherFor(string topicResource) =>
        _publishers.GetOrAdd(topicResource, static (t, transport) => new TopicPublisher(transport.Connection, t, transport.Options, transport._time), this);

    /// <summary>
    /// Publishes through the topic's queue. Only the application's publishes pause an ordering key when they fail; the
    /// transport's own (dead letters, replays) handle a failure themselves, and nobody could resume a key they paused.
    /// </summary>
    internal async Task PublishMessagesAsync(string topicResource, IReadOnlyList<PubsubMessage> messages, CancellationToken cancellationToken, bool pausesOrderingKeys = false)
    {
        // Queued in order, so messages of one ordering key keep their order.
        await PublisherFor(topicResource).PublishAsync(messages, cancellationToken, pausesOrderingKeys).ConfigureAwait(false);
    }

    /// <summary>
    /// Lets events with <paramref name="orderingKey"/> be published to <paramref name="topic"/> again after a publish of that
    /// key failed. Until then such publishes throw <see cref="OrderingKeyPausedException"/> (see there). Does nothing when
    /// the key is not paused.
    /// </summary>
    public void ResumePublish(string topic, string orderingKey)
    {
        ArgumentException.ThrowIfNullOrEmpty(topic);
        ArgumentNullException.ThrowIfNull(orderingKey);
        if (_publishers.TryGetValue(Names.Topic(topic), out var publisher))
        {
            publisher.Resume(orderingKey);
        }
    }

    // ---- consuming -----------------------------------------------------------------------------

    /// <inheritdoc />
    public async Task<ITransportReceiver> StartReceiverAsync(ReceivePipeline pipeline, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        ThrowIfDisposed();
        var receiver = new PubSubReceiver(this, pipeline, _logger);
        await receiver.StartAsync(cancellationToken).ConfigureAwait(false);
        _receivers.TryAdd(receiver, 0);
        return receiver;
    }

    internal void Remove(PubSubReceiver receiver) => _receivers.TryRemove(receiver, out _);

    // ---- health --------------------------------------------------------------------------------

    /// <summary>
    /// Nothing: Pub/Sub reports a subscription's backlog and its dead letters only through Cloud Monitoring
    /// (<c>subscription/num_undelivered_messages</c>), which the emulator lacks, and counting dead letters by pulling them
    /// every polling interval would redeliver them to whoever reads the dead-letter subscription.
    /// </summary>
    public Task<SubscriptionBacklog?> GetBacklogAsync(SubscriptionDefinition subscription, CancellationToken cancellationToken) =>
        Task.FromResult<SubscriptionBacklog?>(null);

    /// <summary>
    /// One cheap call with a short deadline: GetSubscription of a subscription this process consumes, or else GetTopic of a
    /// topic it published to; healthy without a call when it has used neither yet.
    /// </summary>
    public async Task<TransportHealth> CheckHealthAsync(CancellationToken cancellationToken)
    {
        ThrowIfDisposed();
        var subscription = _receivers.Keys.Select(r => Names.Subscription(r.Subscription)).Order(StringComparer.Ordinal).FirstOrDefault();
        var topic = subscription is null ? _publishers.Keys.Order(StringComparer.Ordinal).FirstOrDefault() : null;
        var what = subscription is not null ? $"subscription {subscription}" : $"topic {topic}";
        try
        {
            var options = PubSubConnection.Call(cancellationToken, HealthCallTimeout);
            if (subscription is not null)
            {
                await Connection.Subscriber.GetSubscriptionAsync(new GetSubscriptionRequest { Subscription = subscription }, options).ResponseAsync.ConfigureAwait(false);
            }
            else if (topic is not null)
            {
                await Connection.Publisher.GetTopicAsync(new GetTopicRequest { Topic = topic }, options).ResponseAsync.ConfigureAwait(false);
            }
            else
            {
                return TransportHealth.Healthy($"Pub/Sub at {Connection.Address}: no subscription or topic used yet to check.");
            }
            return TransportHealth.Healthy($"Pub/Sub at {Connection.Address} answers ({what}).");
        }
        catch (RpcException ex) when (!cancellationToken.IsCancellationRequested)
        {
            return TransportHealth.Unhealthy($"Pub/Sub at {Connection.Address} did not answer for {what}: {ex.StatusCode} {ex.Status.Detail}", ex);
        }
    }

    // ---- dead letters --------------------------------------------------------------------------

    /// <summary>
    /// Throws unless the subscription's dead letters have somewhere to stay. Pub/Sub keeps a message only for the
    /// subscriptions its topic has when it is published, so a dead letter published to <c>{name}.dead-letter</c> while that
    /// topic's subscription is missing (provisioning off, or the subscription deleted) is dropped, and acknowledging the
    /// original afterwards would lose the event. A positive answer is kept for <see cref="DeadLetterCheckInterval"/> (one
    /// GetSubscription call per subscription and interval, not one per dead letter); a failed dead-letter settlement
    /// forgets it, so the next one asks again.
    /// </summary>
    internal async Task EnsureDeadLetterSubscriptionAsync(string subscription, CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        if (_deadLetterSubscriptionSeen.TryGetValue(subscription, out var seen) && now - seen < DeadLetterCheckInterval)
        {
            return;
        }
        var resource = Names.Subscription(PubSubNames.DeadLetter(subscription));
        var topic = Names.Topic(PubSubNames.DeadLetter(subscription));
        Grpc.Subscription? existing;
        try
        {
            existing = await PubSubConnection.WithRetryAsync(
                o => Connection.Subscriber.GetSubscriptionAsync(new GetSubscriptionRequest { Subscription = resource }, o).ResponseAsync,
                cancellationToken).ConfigureAwait(false);
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.NotFound)
        {
            existing = null;
        }
        if (existing is null || !string.Equals(existing.Topic, topic, StringComparison.Ordinal))
        {
            throw new InvalidOperationException(
                $"Pub/Sub dead-letter subscription '{resource}' {(existing is null ? "does not exist" : $"reads topic '{existing.Topic}', not '{topic}'")}, " +
                $"so a dead letter published to '{topic}' would be dropped; the message was not dead-lettered and goes back to '{subscription}'. " +
                "Provision the subscription (Messaging:Provisioning) or create it on that topic.");
        }
        _deadLetterSubscriptionSeen[subscription] = now;
    }

    /// <summary>Forgets that the dead-letter subscription was seen, after a dead-letter settlement failed.</summary>
    internal void ForgetDeadLetterSubscription(string subscription) => _deadLetterSubscriptionSeen.TryRemove(subscription, out _);

    /// <summary>
    /// Pulls up to <paramref name="maxCount"/> messages from the dead-letter subscription and releases them again
    /// (deadline 0). While a peek runs (at most the dead-letter ack deadline, 60 s) another reader does not see them.
    /// </summary>
    public async Task<IReadOnlyList<DeadLetteredEvent>> PeekAsync(string subscription, int maxCount, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(subscription);
        ThrowIfDisposed();
        var resource = Names.Subscription(PubSubNames.DeadLetter(subscription));
        var result = new List<DeadLetteredEvent>();
        var held = new List<string>();
        try
        {
            if (maxCount <= 0)
            {
                return result;
            }
            var seen = new HashSet<string>(StringComparer.Ordinal);
            await foreach (var received in PullAllAsync(resource, maxCount, cancellationToken).ConfigureAwait(false))
            {
                held.Add(received.AckId);
                if (seen.Add(received.Message.MessageId))
                {
                    result.Add(ToDeadLettered(received, subscription));
                }
                if (result.Count >= maxCount)
                {
                    break;
                }
            }
            return result;
        }
        finally
        {
            await ReleaseAsync(resource, held).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Reads the whole dead-letter subscription; each selected event is published to the subscription's own replay
    /// topic (a new message, so its delivery attempts restart at 1, reaching no other subscription) with the
    /// dead-letter metadata removed, then acknowledged; the others are released unchanged.
    /// </summary>
    public async Task<int> ReplayAsync(string subscription, Func<DeadLetteredEvent, bool> select, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(subscription);
        ArgumentNullException.ThrowIfNull(select);
        ThrowIfDisposed();
        var resource = Names.Subscription(PubSubNames.DeadLetter(subscription));
        var replayTopic = Names.Topic(PubSubNames.Replay(subscription));
        var kept = new List<string>();
        var replayed = 0;
        try
        {
            var decisions = new Dictionary<string, bool>(StringComparer.Ordinal);
            var chosen = new List<ReceivedMessage>();
            var duplicates = new List<string>();
            await foreach (var received in PullAllAsync(resource, int.MaxValue, cancellationToken).ConfigureAwait(false))
            {
                if (decisions.TryGetValue(received.Message.MessageId, out var wasChosen))
                {
                    (wasChosen ? duplicates : kept).Add(received.AckId);
                    continue;
                }
                var take = select(ToDeadLettered(received, subscription));
                decisions[received.Message.MessageId] = take;
                if (take)
                {
                    chosen.Add(received);
                }
                else
                {
                    kept.Add(received.AckId);
                }
            }
            foreach (var received in chosen)
            {
                var message = new PubsubMessage { Data = received.Message.Data, OrderingKey = received.Message.OrderingKey };
                foreach (var (key, value) in received.Message.Attributes)
                {
                    if (!IsDeadLetterAttribute(key))
                    {
                        message.Attributes[key] = value;
                    }
                }
                await PublishMessagesAsync(replayTopic, [message], cancellationToken).ConfigureAwait(false);
                await AcknowledgeAsync(resource, [received.AckId], cancellationToken).ConfigureAwait(false);
                replayed++;
            }
            if (duplicates.Count > 0)
            {
                await AcknowledgeAsync(resource, duplicates, cancellationToken).ConfigureAwait(false);
            }
            // Anything chosen but not replayed (an error above) goes back with the kept ones.
            kept.AddRange(chosen.Skip(replayed).Select(r => r.AckId));
            return replayed;
        }
        finally
        {
            await ReleaseAsync(resource, kept).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Reads the whole dead-letter subscription as a replay does; each selected event (and any duplicate delivery of it) is
    /// acknowledged, which removes it; the others are released unchanged.
    /// </summary>
    public async Task<int> PurgeAsync(string subscription, Func<DeadLetteredEvent, bool> select, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(subscription);
        ArgumentNullException.ThrowIfNull(select);
        ThrowIfDisposed();
        var resource = Names.Subscription(PubSubNames.DeadLetter(subscription));
        var kept = new List<string>();
        var chosen = new List<string>();
        try
        {
            var decisions = new Dictionary<string, bool>(StringComparer.Ordinal);
            var purged = 0;
            await foreach (var received in PullAllAsync(resource, int.MaxValue, cancellationToken).ConfigureAwait(false))
            {
                if (!decisions.TryGetValue(received.Message.MessageId, out var take))
                {
                    take = select(ToDeadLettered(received, subscription));
                    decisions[received.Message.MessageId] = take;
                    if (take)
                    {
                        purged++;
                    }
                }
                (take ? chosen : kept).Add(received.AckId);
            }
            if (chosen.Count > 0)
            {
                await AcknowledgeAsync(resource, chosen, cancellationToken).ConfigureAwait(false);
            }
            chosen.Clear();
            return purged;
        }
        finally
        {
            // Anything chosen but not acknowledged (an error above) goes back with the kept ones.
            await ReleaseAsync(resource, [.. kept, .. chosen]).ConfigureAwait(false);
        }
    }

    private async IAsyncEnumerable<ReceivedMessage> PullAllAsync(string resource, int maxCount, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var returned = 0;
        var emptyInARow = 0;
        while (returned < maxCount && emptyInARow < 2)
        {
            // return_immediately may answer "empty" while messages exist, so an empty answer is confirmed by one
            // short waiting pull before we conclude the subscription is drained.
            var immediate = emptyInARow == 0;
            var request = new PullRequest { Subscription = resource, MaxMessages = Math.Min(1000, maxCount - returned), ReturnImmediately = immediate };
            PullResponse response;
            try
            {
                response = await Connection.Subscriber.PullAsync(request, PubSubConnection.Call(cancellationToken, immediate ? null : TimeSpan.FromSeconds(2))).ResponseAsync.ConfigureAwait(false);
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.DeadlineExceeded && !immediate)
            {
                response = new PullResponse();
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.NotFound)
            {
                throw new InvalidOperationException($"Pub/Sub dead-letter subscription '{resource}' does not exist. Provision the subscription first.", ex);
            }
            if (response.ReceivedMessages.Count == 0)
            {
                emptyInARow++;
                continue;
            }
            emptyInARow = 0;
            foreach (var received in response.ReceivedMessages)
            {
                returned++;
                yield return received;
            }
        }
    }

    private Task AcknowledgeAsync(string resource, IEnumerable<string> ackIds, CancellationToken cancellationToken)
    {
        var request = new AcknowledgeRequest { Subscription = resource };
        request.AckIds.AddRange(ackIds);
        return PubSubConnection.WithRetryAsync(o => Connection.Subscriber.AcknowledgeAsync(request, o).ResponseAsync, cancellationToken);
    }

    private async Task ReleaseAsync(string resource, List<string> ackIds)
    {
        foreach (var chunk in ackIds.Chunk(1000))
        {
            var request = new ModifyAckDeadlineRequest { Subscription = resource, AckDeadlineSeconds = 0 };
            request.AckIds.AddRange(chunk);
            try
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30), _time);
                await PubSubConnection.WithRetryAsync(o => Connection.Subscriber.ModifyAckDeadlineAsync(request, o).ResponseAsync, timeout.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is RpcException or OperationCanceledException)
            {
                LogReleaseDeadLettersFailed(ex, chunk.Length, resource, DeadLetterAckDeadline);
            }
        }
    }

    private DeadLetteredEvent ToDeadLettered(ReceivedMessage received, string subscription)
    {
        var message = received.Message;
        CloudEvent? cloudEvent = null;
        try
        {
            cloudEvent = Codec.Decode(message);
        }
        catch (Exception)
        {
            // Dead-lettered because it is not a valid CloudEvent, whatever the decoder throws; the raw body is still there.
        }
        var movedByBroker = message.Attributes.ContainsKey(BrokerDeliveryCountAttribute);
        var brokerAttempts = message.Attributes.TryGetValue(BrokerDeliveryCountAttribute, out var count)
            && int.TryParse(count, NumberStyles.Integer, CultureInfo.InvariantCulture, out var parsed) ? parsed : 0;
        var metadata = DeadLetterMetadata.FromProperties(
            key => message.Attributes.TryGetValue(key, out var value) ? value : null,
            subscription,
            brokerAttempts,
            movedByBroker ? DeadLetterReason.DeliveryLimitExceeded : DeadLetterReason.Unknown);
        if (metadata.Time == DateTimeOffset.MinValue && message.PublishTime is not null)
        {
            metadata = metadata with { Time = message.PublishTime.ToDateTimeOffset() };
        }
        return new DeadLetteredEvent
        {
            DeadLetterId = message.MessageId,
            Event = cloudEvent,
            Body = message.Data.Memory,
            Metadata = metadata,
        };
    }

    internal static bool IsDeadLetterAttribute(string key) =>
        DeadLetterMetadata.IsMetadataProperty(key) || key.StartsWith(BrokerDeadLetterPrefix, StringComparison.Ordinal);

    /// <summary>Pub/Sub attribute values are limited to 1024 bytes; cut longer text on a character boundary.</summary>
    internal static string ClipAttributeValue(string value)
    {
        if (Encoding.UTF8.GetByteCount(value) <= MaxAttributeValueBytes)
        {
            return value;
        }
        var length = Math.Min(value.Length, MaxAttributeValueBytes);
        while (length > 0 && Encoding.UTF8.GetByteCount(value.AsSpan(0, length)) > MaxAttributeValueBytes)
        {
            length--;
        }
        if (length > 0 && char.IsHighSurrogate(value[length - 1]))
        {
            length--;
        }
        return value[..length];
    }

    // ---- lifetime ------------------------------------------------------------------------------

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) == 1, this);

    /// <summary>
    /// Stops every receiver at once, like a dropped connection (unsettled messages go back to Pub/Sub when their deadline
    /// passes), stops the topics' publishing queues and closes the gRPC channel.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }
        // Like a dropped connection: consumers stop at once and unsettled messages go back to Pub/Sub.
        foreach (var receiver in _receivers.Keys)
        {
            await receiver.DisposeAsync().ConfigureAwait(false);
        }
        foreach (var publisher in _publishers.Values)
        {
            await publisher.DisposeAsync().ConfigureAwait(false);
        }
        Connection.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Pub/Sub subscription {Subscription} already exists without the expected dead-letter policy (topic {DeadLetterTopic}); delivery attempts will not be counted by the broker.")]
    private partial void LogNoDeadLetterPolicy(string subscription, string deadLetterTopic);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Pub/Sub subscription {Subscription} already exists and keeps messages for {Existing}, not the {Wanted} of Messaging:PubSub:DeadLetterRetention; existing subscriptions are not changed (gcloud pubsub subscriptions update --message-retention-duration does it).")]
    private partial void LogOtherRetention(string subscription, TimeSpan existing, TimeSpan wanted);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Pub/Sub subscription {Subscription} already exists and will expire (be deleted, with its messages) after {Ttl} without activity; existing subscriptions are not changed (gcloud pubsub subscriptions update --expiration-period=never does it).")]
    private partial void LogSubscriptionExpires(string subscription, TimeSpan ttl);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Releasing {Count} dead letter(s) on {Subscription} failed; they become visible again within {Deadline}.")]
    private partial void LogReleaseDeadLettersFailed(Exception exception, int count, string subscription, TimeSpan deadline);
}
