using System.Collections.Concurrent;
using Azure.Messaging.ServiceBus;
using Azure.Messaging.ServiceBus.Administration;
using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Envelope;
using Messaging.Topology;
using Messaging.Transport;
using Microsoft.Extensions.Logging;

namespace Messaging.ServiceBus;

/// <summary>
/// Azure Service Bus transport. Topology: topic = Service Bus topic; subscription = Service Bus subscription of that topic
/// (default rule: every message) plus one queue, <c>{subscription}.redelivery</c>, that its consumers read as well and that
/// receives the subscription's retry copies and dead-letter replays (Service Bus cannot address one subscription of a
/// topic without SQL filter rules). Messages are received in PeekLock mode; attempts are counted by the broker
/// (<c>DeliveryCount</c>) plus a property carried by retry copies; dead letters use the native dead-letter sub-queues.
/// </summary>
public sealed partial class ServiceBusTransport : IMessageTransport
{
    /// <summary>The name that selects this transport in configuration.</summary>
    public const string TransportName = "ServiceBus";

    private readonly ServiceBusClient _client;
    private readonly ServiceBusAdministrationClient _administration;
    private readonly ConcurrentDictionary<string, ServiceBusSender> _senders = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, string> _topicOfSubscription = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<ServiceBusSubscriptionReceiver, byte> _receivers = new();
    private readonly ConcurrentDictionary<string, ServiceBusReceiver> _healthReceivers = new(StringComparer.Ordinal);
    private readonly ServiceBusDeadLetterStore _deadLetters;
    private readonly ILogger _logger;
    private int _disposed;

    /// <summary>
    /// Creates the transport with its Service Bus client and administration client (no connection is opened here): from
    /// <see cref="ServiceBusTransportOptions.ConnectionString"/> when set, else from
    /// <see cref="ServiceBusTransportOptions.FullyQualifiedNamespace"/> with <see cref="ServiceBusTransportOptions.Credential"/>.
    /// </summary>
    /// <param name="options">Connection, content mode, lock, receive and retry settings (<c>Messaging:ServiceBus</c>).</param>
    /// <param name="extensionAttributes">Declared extension attributes, read back with their types.</param>
    /// <param name="loggerFactory">For the transport's warnings.</param>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> or <paramref name="loggerFactory"/> is null.</exception>
    /// <exception cref="InvalidOperationException">Only a namespace is configured and no credential is available.</exception>
    public ServiceBusTransport(ServiceBusTransportOptions options, IReadOnlyList<CloudEventAttribute> extensionAttributes, ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        Options = options;
        _logger = loggerFactory.CreateLogger<ServiceBusTransport>();
        var clientOptions = new ServiceBusClientOptions
        {
            TransportType = options.UseWebSockets ? ServiceBusTransportType.AmqpWebSockets : ServiceBusTransportType.AmqpTcp,
            Identifier = options.ClientIdentifier,
            RetryOptions = new ServiceBusRetryOptions
            {
                Mode = ServiceBusRetryMode.Exponential,
                MaxRetries = options.MaxRetries,
                Delay = options.RetryDelay,
                MaxDelay = TimeSpan.FromSeconds(10),
                TryTimeout = options.TryTimeout,
            },
        };
        if (!string.IsNullOrWhiteSpace(options.ConnectionString))
        {
            _client = new ServiceBusClient(options.ConnectionString, clientOptions);
            _administration = new ServiceBusAdministrationClient(options.AdministrationConnectionString ?? options.ConnectionString);
            Endpoint = _client.FullyQualifiedNamespace;
        }
        else
        {
            var credential = options.Credential ?? throw new InvalidOperationException(
                $"{ServiceBusTransportOptions.SectionName}:FullyQualifiedNamespace is set but no credential is available: register an Azure.Core.TokenCredential " +
                "(for example DefaultAzureCredential from Azure.Identity) in dependency injection, or set ServiceBusTransportOptions.Credential.");
            _client = new ServiceBusClient(options.FullyQualifiedNamespace, credential, clientOptions);
            _administration = string.IsNullOrWhiteSpace(options.AdministrationConnectionString)
                ? new ServiceBusAdministrationClient(options.FullyQualifiedNamespace, credential)
                : new ServiceBusAdministrationClient(options.AdministrationConnectionString);
            Endpoint = options.FullyQualifiedNamespace!;
        }
        Codec = new ServiceBusCloudEventCodec(options.ContentMode, extensionAttributes, options.MaxEventSizeBytes, options.CopySubjectToMessageSubject);
        // A lock renewal refused with MessageLockLost is a lost lease.
        // Ordering keys: ordered subscriptions are session-enabled and every message's SessionId is its partitionkey.
        Capabilities = new TransportCapabilities { MaxEventSizeBytes = options.MaxEventSizeBytes, ReportsLostLeases = true, OrderingKeys = true };
        _deadLetters = new ServiceBusDeadLetterStore(this);
    }

    /// <inheritdoc />
    public string Name => TransportName;

    /// <inheritdoc />
    public TransportCapabilities Capabilities { get; }

    /// <inheritdoc />
    public IDeadLetterStore DeadLetters => _deadLetters;

    /// <summary>What the Service Bus SDK itself calls transient (busy, timeout, communication problems), and timeouts.</summary>
    public bool IsTransient(Exception exception) => exception switch
    {
        ServiceBusException serviceBus => serviceBus.IsTransient,
        TimeoutException or IOException => true,
        _ => false,
    };

    /// <summary>The namespace this transport talks to, for messages.</summary>
    public string Endpoint { get; }

    internal ServiceBusTransportOptions Options { get; }

    internal ServiceBusCloudEventCodec Codec { get; }

    internal ServiceBusClient Client => _client;

    internal ILogger Logger => _logger;

    /// <inheritdoc />
    public async Task ProvisionAsync(MessagingTopology topology, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(topology);
        // Refuse names Service Bus would refuse before creating anything, so a bad topology leaves no half-made entities.
        foreach (var subscription in topology.Subscriptions)
        {
            ServiceBusNames.EnsureValidSubscription(subscription.Name);
        }
        foreach (var topic in topology.Topics.Concat(topology.Subscriptions.Select(s => s.Topic)).Distinct(StringComparer.Ordinal))
        {
            await EnsureAsync(
                () => _administration.TopicExistsAsync(ServiceBusNames.Topic(topic), cancellationToken),
                () => _administration.CreateTopicAsync(ServiceBusNames.Topic(topic), cancellationToken),
                $"topic '{topic}'").ConfigureAwait(false);
        }
        foreach (var subscription in topology.Subscriptions)
        {
            Remember(subscription);
            await EnsureAsync(
                () => _administration.SubscriptionExistsAsync(ServiceBusNames.Topic(subscription.Topic), ServiceBusNames.Subscription(subscription.Name), cancellationToken),
                () => _administration.CreateSubscriptionAsync(new CreateSubscriptionOptions(ServiceBusNames.Topic(subscription.Topic), ServiceBusNames.Subscription(subscription.Name))
                {
                    MaxDeliveryCount = Options.MaxDeliveryCount,
                    LockDuration = Options.LockDuration,
                    DeadLetteringOnMessageExpiration = true,
                    RequiresSession = subscription.Ordered,
                }, cancellationToken),
                $"subscription '{subscription.Name}' of topic '{subscription.Topic}'").ConfigureAwait(false);
            await EnsureSessionsMatchAsync(subscription, cancellationToken).ConfigureAwait(false);
            var queue = ServiceBusNames.RedeliveryQueue(subscription.Name);
            await EnsureAsync(
                () => _administration.QueueExistsAsync(queue, cancellationToken),
                () => _administration.CreateQueueAsync(new CreateQueueOptions(queue)
                {
                    MaxDeliveryCount = Options.MaxDeliveryCount,
                    LockDuration = Options.LockDuration,
                    DeadLetteringOnMessageExpiration = true,
                }, cancellationToken),
                $"redelivery queue '{queue}'").ConfigureAwait(false);
        }
    }

    /// <summary>
    /// An ordered subscription is a session-enabled Service Bus subscription and an unordered one is not; Service Bus cannot
    /// change RequiresSession on an existing subscription, so a mismatch fails the start naming it.
    /// </summary>
    private async Task EnsureSessionsMatchAsync(Topology.SubscriptionDefinition subscription, CancellationToken cancellationToken)
    {
        var existing = await _administration.GetSubscriptionAsync(ServiceBusNames.Topic(subscription.Topic), ServiceBusNames.Subscription(subscription.Name), cancellationToken).ConfigureAwait(false);
        if (existing.Value.RequiresSession != subscription.Ordered)
        {
            throw new InvalidOperationException(
                $"Service Bus subscription '{ServiceBusNames.Subscription(subscription.Name)}' of topic '{ServiceBusNames.Topic(subscription.Topic)}' on '{Endpoint}' exists with RequiresSession={existing.Value.RequiresSession}, " +
                $"but subscription '{subscription.Name}' is {(subscription.Ordered ? "ordered, which needs sessions" : "unordered, which cannot read a session-enabled subscription")}. " +
                "Service Bus cannot change RequiresSession on an existing subscription: delete it (its messages with it) or use another subscription name.");
        }
    }

    /// <summary>Exists-check then create; a concurrent creator winning the race (409) is success.</summary>
    private async Task EnsureAsync<T>(Func<Task<Azure.Response<bool>>> exists, Func<Task<Azure.Response<T>>> create, string what)
    {
        try
        {
            if ((await exists().ConfigureAwait(false)).Value)
            {
                return;
            }
            await create().ConfigureAwait(false);
            LogCreated(what);
        }
        catch (ServiceBusException ex) when (ex.Reason == ServiceBusFailureReason.MessagingEntityAlreadyExists)
        {
            // Created meanwhile by another instance: the goal is reached.
        }
        catch (Exception ex) when (ex is Azure.RequestFailedException or ServiceBusException or UnauthorizedAccessException or HttpRequestException)
        {
            throw new InvalidOperationException(
                $"Could not provision {what} on Service Bus '{Endpoint}': {ex.Message}. Check {ServiceBusTransportOptions.SectionName}:ConnectionString " +
                "(Manage rights are needed to create entities) or AdministrationConnectionString, or create the entities yourself and set Messaging:Provisioning to false.", ex);
        }
    }

    /// <summary>
    /// Sends the events to the Service Bus topic in batches sized by the broker's link limit and completes once the broker
    /// has accepted every batch.
    /// </summary>
    /// <exception cref="Messaging.Envelope.EventTooLargeException">An event is larger than <see cref="ServiceBusTransportOptions.MaxEventSizeBytes"/> or than the link allows.</exception>
    /// <exception cref="Messaging.Publishing.EventPublishException">The broker refused the send, or it failed after the client's retries.</exception>
    public async Task PublishAsync(string topic, IReadOnlyList<CloudEvent> events, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(events);
        if (events.Count == 0)
        {
            return;
        }
        // Encode everything first: a too-large event fails the whole call before anything is sent.
        var messages = new ServiceBusMessage[events.Count];
        for (var i = 0; i < events.Count; i++)
        {
            messages[i] = Codec.Encode(events[i]);
        }
        var sender = Sender(ServiceBusNames.Topic(topic));
        try
        {
            if (messages.Length == 1)
            {
                await sender.SendMessageAsync(messages[0], cancellationToken).ConfigureAwait(false);
                return;
            }
            await SendBatchedAsync(sender, messages, events, cancellationToken).ConfigureAwait(false);
        }
        catch (ServiceBusException ex) when (ex.Reason == ServiceBusFailureReason.MessagingEntityNotFound)
        {
            throw new InvalidOperationException(
                $"Service Bus topic '{topic}' does not exist on '{Endpoint}'. Provision the topology (Messaging:Provisioning) or create the topic.", ex);
        }
        catch (ServiceBusException ex) when (ex.Reason == ServiceBusFailureReason.MessageSizeExceeded)
        {
            throw new EventTooLargeException(events[0].Id ?? "?", messages.Max(m => (long)m.Body.ToMemory().Length), Options.MaxEventSizeBytes, TransportName);
        }
    }

    /// <summary>Fills ServiceBusMessageBatch objects (sized by the broker's link limit) and sends each when it is full.</summary>
    private static async Task SendBatchedAsync(ServiceBusSender sender, ServiceBusMessage[] messages, IReadOnlyList<CloudEvent> events, CancellationToken cancellationToken)
    {
        var batch = await sender.CreateMessageBatchAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            for (var i = 0; i < messages.Length; i++)
            {
                if (batch.TryAddMessage(messages[i]))
                {
                    continue;
                }
                if (batch.Count == 0)
                {
                    throw new EventTooLargeException(events[i].Id ?? "?", messages[i].Body.ToMemory().Length, batch.MaxSizeInBytes, TransportName);
                }
                await sender.SendMessagesAsync(batch, cancellationToken).ConfigureAwait(false);
                batch.Dispose();
                batch = await sender.CreateMessageBatchAsync(cancellationToken).ConfigureAwait(false);
                i--; // the message that did not fit goes first into the new batch
            }
            if (batch.Count > 0)
            {
                await sender.SendMessagesAsync(batch, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            batch.Dispose();
        }
    }

    /// <inheritdoc />
    public async Task<ITransportReceiver> StartReceiverAsync(ReceivePipeline pipeline, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        var subscription = pipeline.Subscription;
        ServiceBusNames.EnsureValidSubscription(subscription.Name);
        Remember(subscription);
        var receiver = new ServiceBusSubscriptionReceiver(this, pipeline, _logger);
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

    // ---- health --------------------------------------------------------------------------------

    /// <summary>
    /// Peeks one message (no lock, nothing changes) on the redelivery queue of a subscription this process consumes, over
    /// the connection the consumers use; healthy without a call when it consumes none.
    /// </summary>
    public async Task<TransportHealth> CheckHealthAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) == 1, this);
        var subscription = _receivers.Keys.Select(r => r.Subscription).Order(StringComparer.Ordinal).FirstOrDefault();
        if (subscription is null)
        {
            return TransportHealth.Healthy($"Service Bus '{Endpoint}': no subscription consumed to check.");
        }
        var queue = ServiceBusNames.RedeliveryQueue(subscription);
        var receiver = _healthReceivers.GetOrAdd(queue, static (entity, client) =>
            client.CreateReceiver(entity, new ServiceBusReceiverOptions { ReceiveMode = ServiceBusReceiveMode.PeekLock, PrefetchCount = 0 }), _client);
        try
        {
            await receiver.PeekMessageAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
            return TransportHealth.Healthy($"Service Bus '{Endpoint}' answers (peek on {queue}).");
        }
        catch (ServiceBusException ex) when (!cancellationToken.IsCancellationRequested)
        {
            return TransportHealth.Unhealthy($"Service Bus '{Endpoint}' refused a peek on {queue}: {ex.Reason}: {ex.Message}", ex);
        }
    }

    /// <summary>
    /// The dead letters of a subscription as the administration API counts them (its own and its redelivery queue's
    /// dead-letter sub-queues): no message is read. Without Manage rights the store peeks instead (see there).
    /// </summary>
    internal async Task<long> DeadLetterCountAsync(string subscription, CancellationToken cancellationToken)
    {
        var topic = await TopicOfAsync(subscription, cancellationToken).ConfigureAwait(false);
        var ofSubscription = await _administration.GetSubscriptionRuntimePropertiesAsync(
            ServiceBusNames.Topic(topic), ServiceBusNames.Subscription(subscription), cancellationToken).ConfigureAwait(false);
        var ofQueue = await _administration.GetQueueRuntimePropertiesAsync(ServiceBusNames.RedeliveryQueue(subscription), cancellationToken).ConfigureAwait(false);
        return ofSubscription.Value.DeadLetterMessageCount + ofQueue.Value.DeadLetterMessageCount;
    }

    /// <summary>
    /// Waiting: the administration API's ActiveMessageCount of the subscription and of its redelivery queue, which Service
    /// Bus does not split into waiting and locked: messages being handled are counted. Dead letters: the dead-letter store's
    /// count. No age. Without Manage rights the waiting count is not reported.
    /// </summary>
    public async Task<SubscriptionBacklog?> GetBacklogAsync(SubscriptionDefinition subscription, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(subscription);
        Remember(subscription);
        long? waiting;
        try
        {
            var ofSubscription = await _administration.GetSubscriptionRuntimePropertiesAsync(
                ServiceBusNames.Topic(subscription.Topic), ServiceBusNames.Subscription(subscription.Name), cancellationToken).ConfigureAwait(false);
            var ofQueue = await _administration.GetQueueRuntimePropertiesAsync(ServiceBusNames.RedeliveryQueue(subscription.Name), cancellationToken).ConfigureAwait(false);
            waiting = ofSubscription.Value.ActiveMessageCount + ofQueue.Value.ActiveMessageCount;
        }
        catch (UnauthorizedAccessException)
        {
            waiting = null;
        }
        var deadLetters = await SubscriptionBacklog.CountDeadLettersAsync(this, subscription, cancellationToken).ConfigureAwait(false);
        return new SubscriptionBacklog(waiting, deadLetters, OldestAge: null);
    }

    internal ServiceBusSender Sender(string entity) => _senders.GetOrAdd(entity, static (name, client) => client.CreateSender(name), _client);

    internal void Forget(ServiceBusSubscriptionReceiver receiver) => _receivers.TryRemove(receiver, out _);

    private void Remember(SubscriptionDefinition subscription) => _topicOfSubscription[subscription.Name] = subscription.Topic;

    /// <summary>The topic of a subscription: known from the topology, or looked up once through the administration API.</summary>
    internal async Task<string> TopicOfAsync(string subscription, CancellationToken cancellationToken)
    {
        if (_topicOfSubscription.TryGetValue(subscription, out var topic))
        {
            return topic;
        }
        await foreach (var candidate in _administration.GetTopicsAsync(cancellationToken).ConfigureAwait(false))
        {
            if ((await _administration.SubscriptionExistsAsync(candidate.Name, subscription, cancellationToken).ConfigureAwait(false)).Value)
            {
                _topicOfSubscription[subscription] = candidate.Name;
                return candidate.Name;
            }
        }
        throw new InvalidOperationException($"No topic on Service Bus '{Endpoint}' has a subscription named '{subscription}'.");
    }

    /// <summary>
    /// Closes every receiver like a crash (running handlers are cancelled, not awaited; their messages stay locked until
    /// the lock expires and Service Bus counts the delivery), then the senders and the client.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }
        // Like a crash: links close, handlers still running are cancelled, not awaited; their messages stay locked until the
        // lock expires, and Service Bus counts that delivery.
        foreach (var receiver in _receivers.Keys)
        {
            await receiver.DisposeAsync().ConfigureAwait(false);
        }
        foreach (var sender in _senders.Values)
        {
            await sender.DisposeAsync().ConfigureAwait(false);
        }
        foreach (var receiver in _healthReceivers.Values)
        {
            await receiver.DisposeAsync().ConfigureAwait(false);
        }
        await _client.DisposeAsync().ConfigureAwait(false);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Created Service Bus {Entity}")]
    private partial void LogCreated(string entity);
}
