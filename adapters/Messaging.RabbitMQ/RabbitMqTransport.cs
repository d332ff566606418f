using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Topology;
using Messaging.Transport;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace Messaging.RabbitMQ;

/// <summary>
/// RabbitMQ transport. Topology: topic = durable exchange, fanout unless <see cref="RabbitMqTransportOptions.ExchangeType"/>
/// says topic; subscription = durable quorum queue bound with <c>#</c>; per subscription a dead-letter quorum queue and, created on first use, one TTL retry queue per backoff
/// delay that dead-letters back into the subscription. Attempts are counted on the broker: the quorum queue's <c>x-delivery-count</c>
/// (deliveries returned unacknowledged, e.g. by a crashed consumer) plus a header carried by retry copies.
/// </summary>
public sealed partial class RabbitMqTransport : IMessageTransport
{
    /// <summary>The name that selects this transport in configuration.</summary>
    public const string TransportName = "RabbitMQ";

    private readonly RabbitMqConnections _connections;
    private readonly RabbitMqDeadLetterStore _deadLetters;
    private readonly ILogger _logger;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<RabbitMqReceiver, byte> _receivers = new();
    private int _disposed;

    /// <summary>
    /// Creates the transport. No connection is opened here: the publishing and consuming connections are opened on first
    /// use and recover by themselves (every <see cref="RabbitMqTransportOptions.NetworkRecoveryInterval"/>).
    /// </summary>
    /// <param name="options">Connection, TLS, content mode and publishing settings (<c>Messaging:RabbitMQ</c>).</param>
    /// <param name="extensionAttributes">Declared extension attributes, read back with their types.</param>
    /// <param name="loggerFactory">For the transport's warnings (existing entities that differ, blocked connections, ...).</param>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> or <paramref name="loggerFactory"/> is null.</exception>
    public RabbitMqTransport(RabbitMqTransportOptions options, IReadOnlyList<CloudEventAttribute> extensionAttributes, ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        Options = options;
        _logger = loggerFactory.CreateLogger<RabbitMqTransport>();
        _connections = new RabbitMqConnections(options, _logger);
        Publisher = new RabbitMqPublisher(_connections, options);
        Codec = new RabbitMqCloudEventCodec(options.ContentMode, extensionAttributes, options.MaxEventSizeBytes);
        // A delivery's lease is the consuming channel: when the broker closes it, running handlers are cancelled.
        Capabilities = new TransportCapabilities { MaxEventSizeBytes = options.MaxEventSizeBytes, ReportsLostLeases = true, OrderingKeys = true };
        _deadLetters = new RabbitMqDeadLetterStore(this);
    }

    /// <inheritdoc />
    public string Name => TransportName;

    /// <inheritdoc />
    public TransportCapabilities Capabilities { get; }

    /// <inheritdoc />
    public IDeadLetterStore DeadLetters => _deadLetters;

    /// <summary>A connection lost or not yet recovered, a nack, a blocked broker (timeout): worth trying again.</summary>
    public bool IsTransient(Exception exception) => exception switch
    {
        TimeoutException => true,
        InvalidOperationException { InnerException: BrokerUnreachableException } => true,
        _ => RabbitMqPublisher.IsTransient(exception),
    };

    internal RabbitMqTransportOptions Options { get; }

    internal RabbitMqPublisher Publisher { get; }

    internal RabbitMqCloudEventCodec Codec { get; }

    internal RabbitMqConnections Connections => _connections;

    /// <summary>The connections' state, without a call to the broker: closed ones are unhealthy, a publishing block degraded.</summary>
    public Task<TransportHealth> CheckHealthAsync(CancellationToken cancellationToken) => Task.FromResult(_connections.Health());

    /// <summary>
    /// Waiting: the ready messages of the subscription's queue (a passive declare), without those delivered and not yet
    /// acknowledged or waiting out a retry delay in a retry queue. Dead letters: the dead-letter store's count. No age.
    /// </summary>
    public async Task<SubscriptionBacklog?> GetBacklogAsync(SubscriptionDefinition subscription, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(subscription);
        var connection = await _connections.ConsumingAsync(cancellationToken).ConfigureAwait(false);
        var channel = await connection.CreateChannelAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        uint ready;
        await using (channel.ConfigureAwait(false))
        {
            var declared = await channel.QueueDeclarePassiveAsync(RabbitMqNames.Queue(subscription.Name), cancellationToken).ConfigureAwait(false);
            ready = declared.MessageCount;
            await channel.CloseAsync(cancellationToken).ConfigureAwait(false);
        }
        var deadLetters = await SubscriptionBacklog.CountDeadLettersAsync(this, subscription, cancellationToken).ConfigureAwait(false);
        return new SubscriptionBacklog(ready, deadLetters, OldestAge: null);
    }

    /// <inheritdoc />
    public async Task ProvisionAsync(MessagingTopology topology, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(topology);
        var connection = await _connections.PublishingAsync(cancellationToken).ConfigureAwait(false);
        var declared = new HashSet<string>(StringComparer.Ordinal);
        foreach (var topic in topology.Topics.Concat(topology.Subscriptions.Select(s => s.Topic)))
        {
            if (declared.Add(topic))
            {
                await DeclareExchangeAsync(connection, RabbitMqNames.Exchange(topic), cancellationToken).ConfigureAwait(false);
            }
        }
        foreach (var subscription in topology.Subscriptions)
        {
            await DeclareSubscriptionAsync(connection, subscription, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Declares a topic's exchange with the configured type. The broker refuses to redeclare an exchange with another
    /// type or other properties (and closes the channel): such an exchange, e.g. a topic exchange declared by an earlier
    /// version, is used as it is. Subscriptions bind with <c>#</c>, which receives everything from either type.
    /// </summary>
    private async Task DeclareExchangeAsync(IConnection connection, string exchange, CancellationToken cancellationToken)
    {
        var type = Options.ExchangeType == RabbitMqExchangeType.Topic ? ExchangeType.Topic : ExchangeType.Fanout;
        var refused = await DeclareAsync(connection,
            channel => channel.ExchangeDeclareAsync(exchange, type, durable: true, autoDelete: false, cancellationToken: cancellationToken), cancellationToken).ConfigureAwait(false);
        if (refused is null)
        {
            return;
        }
        // Confirms the exchange exists (and fails if it has gone in the meantime).
        await DeclareAsync(connection, channel => channel.ExchangeDeclarePassiveAsync(exchange, cancellationToken), cancellationToken).ConfigureAwait(false);
        LogExchangeTypeDiffers(exchange, Options.ExchangeType, refused.ShutdownReason?.ReplyText);
    }

    /// <summary>
    /// Runs a declaration on a short-lived channel. Returns the broker's refusal when the entity exists with other properties
    /// (precondition failed, which also closes the channel), null when it was declared.
    /// </summary>
    private static async Task<OperationInterruptedException?> DeclareAsync(IConnection connection, Func<IChannel, Task> declare, CancellationToken cancellationToken)
    {
        var channel = await connection.CreateChannelAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        try
        {
            await declare(channel).ConfigureAwait(false);
            return null;
        }
        catch (OperationInterruptedException ex) when (ex.ShutdownReason?.ReplyCode == Constants.PreconditionFailed)
        {
            return ex;
        }
        finally
        {
            await ReleaseAsync(channel).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Closes a short-lived channel, also when the broker has already closed it: aborting (unlike disposing) removes a
    /// channel the broker closed from its connection's bookkeeping.
    /// </summary>
    private static async Task ReleaseAsync(IChannel channel)
    {
        try
        {
            await channel.AbortAsync().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationInterruptedException or AlreadyClosedException or IOException)
        {
            // Closed already; nothing more to release on the broker.
        }
        await channel.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// Declares a subscription's quorum queue and its dead-letter queue and binds the queue to the topic. A queue that already
    /// exists with other arguments (one declared by an earlier version, without at-least-once dead-lettering) makes the
    /// broker refuse the declaration: it is used as it is, with a warning that says how to migrate. Retry queues (one quorum
    /// queue per delay) are declared by the receiver on first use: most subscriptions never retry with most delays, and every
    /// quorum queue costs the broker a process and a log.
    /// </summary>
    private async Task DeclareSubscriptionAsync(IConnection connection, SubscriptionDefinition subscription, CancellationToken cancellationToken)
    {
        var queue = RabbitMqNames.Queue(subscription.Name);
        var deadLetterQueue = RabbitMqNames.DeadLetterQueue(subscription.Name);
        var exchange = RabbitMqNames.Exchange(subscription.Topic);
        var refused = await DeclareAsync(connection, async channel =>
        {
            await channel.QueueDeclareAsync(deadLetterQueue, durable: true, exclusive: false, autoDelete: false,
                arguments: new Dictionary<string, object?> { ["x-queue-type"] = "quorum" }, cancellationToken: cancellationToken).ConfigureAwait(false);
            var arguments = new Dictionary<string, object?>
            {
                ["x-queue-type"] = "quorum",
                // Safety net for consumers that crash before settling: after this many unacknowledged returns the
                // broker itself moves the message to the dead-letter queue (reason delivery_limit).
                // It is fixed rather than derived from MaxAttempts so that changing the retry policy never makes the queue's
                // arguments inequivalent (which RabbitMQ refuses on redeclaration).
                ["x-delivery-limit"] = Options.CrashDeliveryLimit,
                ["x-dead-letter-exchange"] = string.Empty,
                ["x-dead-letter-routing-key"] = deadLetterQueue,
                // At-least-once dead-lettering (quorum queues, RabbitMQ 3.10+): the broker keeps a message until the dead-letter
                // queue has confirmed it, so a crash-looping message is never lost on its way there. It needs reject-publish.
                ["x-dead-letter-strategy"] = "at-least-once",
                ["x-overflow"] = "reject-publish",
            };
            if (subscription.Ordered)
            {
                // One consumer of the queue at a time, the others on standby: the broker hands the queue, in order, to the
                // next one when the active consumer goes away (its unacknowledged messages first). Within the process the
                // pipeline runs one lane per ordering key, so different keys are still handled in parallel.
                arguments["x-single-active-consumer"] = true;
            }
            await channel.QueueDeclareAsync(queue, durable: true, exclusive: false, autoDelete: false, arguments: arguments, cancellationToken: cancellationToken).ConfigureAwait(false);
            await channel.QueueBindAsync(queue, exchange, "#", cancellationToken: cancellationToken).ConfigureAwait(false);
        }, cancellationToken).ConfigureAwait(false);
        if (refused is null)
        {
            return;
        }
        if (subscription.Ordered)
        {
            // Without single-active-consumer, two instances would each take part of a key: order cannot be kept on it.
            throw new InvalidOperationException(
                $"RabbitMQ queue '{queue}' of ordered subscription '{subscription.Name}' already exists with other arguments, so it " +
                $"cannot be made a single-active-consumer queue (an ordered subscription needs one). Delete the queue, or use another " +
                $"subscription name. Broker: {refused.ShutdownReason?.ReplyText}");
        }
        // The existing queue is used as it is: it must exist, and be bound.
        await DeclareAsync(connection, async channel =>
        {
            await channel.QueueDeclarePassiveAsync(queue, cancellationToken).ConfigureAwait(false);
            await channel.QueueBindAsync(queue, exchange, "#", cancellationToken: cancellationToken).ConfigureAwait(false);
        }, cancellationToken).ConfigureAwait(false);
        LogQueueArgumentsDiffer(queue, refused.ShutdownReason?.ReplyText);
    }

    /// <summary>
    /// Publishes the events to the topic's exchange (routing key: the event's <c>type</c>) over the pooled publisher channels
    /// and completes once the broker has confirmed every one (publisher confirms).
    /// </summary>
    /// <exception cref="Messaging.Envelope.EventTooLargeException">An event is larger than <see cref="RabbitMqTransportOptions.MaxEventSizeBytes"/>.</exception>
    /// <exception cref="Messaging.Publishing.EventPublishException">The broker refused an event, the connection failed, or no confirm came within <see cref="RabbitMqTransportOptions.PublishTimeout"/>.</exception>
    public async Task PublishAsync(string topic, IReadOnlyList<CloudEvent> events, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(events);
        var exchange = RabbitMqNames.Exchange(topic);
        var messages = new OutgoingMessage[events.Count];
        for (var i = 0; i < events.Count; i++)
        {
            var (properties, body, routingKey) = Codec.Encode(events[i]);
            messages[i] = new OutgoingMessage(exchange, routingKey, Mandatory: false, properties, body);
        }
        await Publisher.PublishAsync(messages, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async Task<ITransportReceiver> StartReceiverAsync(ReceivePipeline pipeline, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        var receiver = new RabbitMqReceiver(this, pipeline, _logger);
        _receivers.TryAdd(receiver, 0);
        try
        {
            await receiver.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await receiver.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        return receiver;
    }

    internal void Forget(RabbitMqReceiver receiver) => _receivers.TryRemove(receiver, out _);

    /// <summary>
    /// Stops every receiver, cancelling running handlers without waiting for them (their messages go back to the queue and the
    /// broker counts a delivery), then closes the publisher channels and the connections.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }
        // Handlers still running are cancelled, not awaited: their messages go back to the queue (a nack, or the
        // connection's close), and the broker counts the return as a delivery.
        foreach (var receiver in _receivers.Keys)
        {
            await receiver.DisposeAsync().ConfigureAwait(false);
        }
        await Publisher.DisposeAsync().ConfigureAwait(false);
        await _connections.DisposeAsync().ConfigureAwait(false);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Exchange '{Exchange}' already exists and differs from what Messaging:RabbitMQ:ExchangeType ({ExchangeType}) declares; it is used as it is. Broker: {Reason}. " +
        "To change it: stop every instance that uses it, delete the exchange (its bindings go with it; queues and their messages stay), then start them again.")]
    private partial void LogExchangeTypeDiffers(string exchange, RabbitMqExchangeType exchangeType, string? reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Queue '{Queue}' already exists with other arguments than this version declares (at-least-once dead-lettering); it is used as it is. Broker: {Reason}. " +
        "To migrate: stop every consumer of it, move or drain its messages, delete the queue, then start again (it is declared anew).")]
    private partial void LogQueueArgumentsDiffer(string queue, string? reason);
}
