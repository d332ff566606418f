using System.Collections.Concurrent;
using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Envelope;
using Messaging.Topology;
using Messaging.Transport;

namespace Messaging.InMemory;

/// <summary>
/// The embedded transport: a broker in process memory with the same semantics as the real ones
/// (fan-out, competing consumers, attempts counted per message, backoff, dead-letter). Events are
/// encoded to properties and bytes on publish, so handlers never share an object with the publisher.
/// </summary>
public sealed class InMemoryTransport : IMessageTransport, IDeadLetterStore
{
    /// <summary>The name that selects this transport in configuration.</summary>
    public const string TransportName = "InMemory";

    private readonly InMemoryBroker _broker;
    private readonly IReadOnlyList<CloudEventAttribute> _extensions;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<InMemoryReceiver, byte> _receivers = new();
    private readonly CancellationTokenSource _disposed = new();

    /// <summary>Creates a transport over <paramref name="broker"/>; several transports over one broker compete for its queues.</summary>
    /// <param name="broker">The broker holding the topics and queues.</param>
    /// <param name="extensionAttributes">Declared extension attributes, read back with their types.</param>
    /// <param name="time">The clock for backoff delays and dead-letter times; the system clock when null.</param>
    /// <exception cref="ArgumentNullException"><paramref name="broker"/> is null.</exception>
    public InMemoryTransport(InMemoryBroker broker, IReadOnlyList<CloudEventAttribute> extensionAttributes, TimeProvider? time = null)
    {
        _broker = broker ?? throw new ArgumentNullException(nameof(broker));
        _extensions = extensionAttributes;
        _time = time ?? TimeProvider.System;
        // The broker is this process's memory: a restart of it is a restart of the process, and loses everything by design.
        Capabilities = new TransportCapabilities
        {
            MaxEventSizeBytes = broker.Options.MaxEventSizeBytes,
            SurvivesBrokerRestart = false,
            ConnectsToBroker = false,
            OrderingKeys = true,
        };
    }

    /// <inheritdoc />
    public string Name => TransportName;

    /// <inheritdoc />
    public TransportCapabilities Capabilities { get; }

    /// <inheritdoc />
    public IDeadLetterStore DeadLetters => this;

    /// <inheritdoc />
    public Task ProvisionAsync(MessagingTopology topology, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(topology);
        foreach (var topic in topology.Topics)
        {
            _broker.DeclareTopic(topic);
        }
        foreach (var subscription in topology.Subscriptions)
        {
            _broker.DeclareSubscription(subscription.Topic, subscription.Name, subscription.Ordered);
        }
        return Task.CompletedTask;
    }

    /// <summary>
    /// Encodes every event to properties and bytes, then stores a copy in the queue of every subscription of
    /// <paramref name="topic"/>. Waits while a queue is full (<see cref="InMemoryTransportOptions.QueueCapacity"/>) or the
    /// broker blocks publishers.
    /// </summary>
    /// <exception cref="EventTooLargeException">An event is larger than <see cref="InMemoryTransportOptions.MaxEventSizeBytes"/>; nothing is stored then.</exception>
    /// <exception cref="InvalidOperationException">The topic was not declared on the broker.</exception>
    /// <exception cref="ObjectDisposedException">The transport was disposed.</exception>
    public async Task PublishAsync(string topic, IReadOnlyList<CloudEvent> events, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed.IsCancellationRequested, this);
        ArgumentNullException.ThrowIfNull(events);
        // What a broker would store: a snapshot of the attributes (their values are immutable; binary ones are copied) and a
        // copy of the data, so that nothing a handler receives is shared with the publisher. No attribute is formatted to a
        // string and parsed back, which cost more than the rest of the transport together.
        if (events.Count == 1)
        {
            await _broker.PublishAsync(topic, Store(events[0]), cancellationToken).ConfigureAwait(false);
            return;
        }
        // All are stored (and checked) before the first is published: a batch with an invalid event stores nothing.
        var stored = new InMemoryMessage[events.Count];
        for (var i = 0; i < events.Count; i++)
        {
            stored[i] = Store(events[i]);
        }
        foreach (var message in stored)
        {
            await _broker.PublishAsync(topic, message, cancellationToken).ConfigureAwait(false);
        }
    }

    // The attributes of the event being stored, gathered here and copied once into the snapshot's exact-size array.
    [ThreadStatic]
    private static List<KeyValuePair<CloudEventAttribute, object>>? t_populated;

    private InMemoryMessage Store(CloudEvent cloudEvent)
    {
        var populated = t_populated ??= new List<KeyValuePair<CloudEventAttribute, object>>(16);
        populated.Clear();
        long size = "specversion".Length + cloudEvent.SpecVersion.VersionId.Length;
        string? orderingKey = null;
        foreach (var (attribute, value) in cloudEvent.GetPopulatedAttributes())
        {
            if (attribute.Name == CloudEventsSpecVersion.SpecVersionAttribute.Name || attribute == cloudEvent.SpecVersion.DataContentTypeAttribute)
            {
                continue;
            }
            var kept = value is byte[] bytes ? bytes.ToArray() : value;
            populated.Add(new(attribute, kept));
            // The size as a binary-mode broker counts it: names and canonical string values.
            size += attribute.Name.Length + value switch
            {
                string text => text.Length,
                Uri uri => uri.OriginalString.Length,
                _ => attribute.Format(value).Length,
            };
            if (attribute.Name == InMemoryMessage.PartitionKeyProperty)
            {
                orderingKey = value as string ?? attribute.Format(value);
            }
        }
        var body = CloudEventData.GetBytes(cloudEvent) ?? [];
        size += body.Length;
        if (size > Capabilities.MaxEventSizeBytes)
        {
            populated.Clear();
            throw new EventTooLargeException(cloudEvent.Id ?? "?", size, Capabilities.MaxEventSizeBytes, Name);
        }
        var snapshot = populated.ToArray();
        populated.Clear(); // holds no event's values past this call
        return new InMemoryMessage(cloudEvent.SpecVersion, snapshot, body.ToArray(), cloudEvent.DataContentType, orderingKey is { Length: > 0 } ? orderingKey : null);
    }

    /// <inheritdoc/>
    public Task<ITransportReceiver> StartReceiverAsync(ReceivePipeline pipeline, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        var queue = _broker.GetQueue(pipeline.Subscription.Name);
        var receiver = new InMemoryReceiver(this, queue, pipeline);
        _receivers.TryAdd(receiver, 0);
        receiver.Start();
        return Task.FromResult<ITransportReceiver>(receiver);
    }

    /// <inheritdoc />
    public Task<IReadOnlyList<DeadLetteredEvent>> PeekAsync(string subscription, int maxCount, CancellationToken cancellationToken)
    {
        var queue = _broker.GetQueue(subscription);
        List<InMemoryMessage> snapshot;
        lock (queue.DeadLetterLock)
        {
            snapshot = queue.DeadLetters.Take(maxCount).ToList();
        }
        return Task.FromResult<IReadOnlyList<DeadLetteredEvent>>(snapshot.Select(m => ToDeadLettered(m, subscription)).ToList());
    }

    /// <summary>The messages of the subscription's queue not yet taken by a receiver, and its dead letters; both exact.</summary>
    public Task<SubscriptionBacklog?> GetBacklogAsync(SubscriptionDefinition subscription, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(subscription);
        var queue = _broker.GetQueue(subscription.Name);
        long deadLetters;
        lock (queue.DeadLetterLock)
        {
            deadLetters = queue.DeadLetters.Count;
        }
        return Task.FromResult<SubscriptionBacklog?>(new SubscriptionBacklog(queue.ReadyCount, deadLetters, OldestAge: null));
    }

    /// <summary>Counts the subscription's dead letters, exactly.</summary>
    public Task<DeadLetterCount> CountAsync(string subscription, int maxCount, CancellationToken cancellationToken)
    {
        var queue = _broker.GetQueue(subscription);
        lock (queue.DeadLetterLock)
        {
            return Task.FromResult(new DeadLetterCount(queue.DeadLetters.Count, IsExact: true));
        }
    }

    /// <inheritdoc />
    public async Task<int> ReplayAsync(string subscription, Func<DeadLetteredEvent, bool> select, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(select);
        var queue = _broker.GetQueue(subscription);
        var chosen = new List<InMemoryMessage>();
        lock (queue.DeadLetterLock)
        {
            foreach (var message in queue.DeadLetters)
            {
                if (select(ToDeadLettered(message, subscription)))
                {
                    chosen.Add(message);
                }
            }
            queue.DeadLetters.RemoveAll(chosen.Contains);
        }
        foreach (var message in chosen)
        {
            var properties = message.Properties
                .Where(p => !DeadLetterMetadata.IsMetadataProperty(p.Key))
                .ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal);
            await queue.PublishAsync(message.CopyWith(properties), cancellationToken).ConfigureAwait(false);
        }
        return chosen.Count;
    }

    /// <inheritdoc/>
    public Task<int> PurgeAsync(string subscription, Func<DeadLetteredEvent, bool> select, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(select);
        var queue = _broker.GetQueue(subscription);
        lock (queue.DeadLetterLock)
        {
            var chosen = queue.DeadLetters.Where(m => select(ToDeadLettered(m, subscription))).ToList();
            queue.DeadLetters.RemoveAll(chosen.Contains);
            return Task.FromResult(chosen.Count);
        }
    }

    /// <summary>
    /// Stops every receiver of this transport at once, like a dropped connection: unsettled messages return to their
    /// queues, where the broker (shared, not disposed) keeps them.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposed.IsCancellationRequested)
        {
            return;
        }
        await _disposed.CancelAsync().ConfigureAwait(false);
        // Like a dropped connection: consumers stop at once and unsettled messages return to their queues.
        foreach (var receiver in _receivers.Keys)
        {
            await receiver.DisposeAsync().ConfigureAwait(false);
        }
        _disposed.Dispose();
    }

    internal CloudEvent Decode(InMemoryMessage message)
    {
        if (message.Attributes is { } attributes)
        {
            return Copy(message, attributes);
        }
        if (StructuredJson.IsStructured(message.ContentType))
        {
            return StructuredJson.Decode(message.Body, message.ContentType, _extensions);
        }
        var properties = message.Properties.Where(p => !DeadLetterMetadata.IsMetadataProperty(p.Key));
        return CloudEventAttributeMap.FromAttributes(properties, message.ContentType, message.Body, _extensions);
    }

    /// <summary>
    /// A fresh event per delivery from a stored snapshot, as the binary-mode decoder of a broker would build it: extensions
    /// this application does not know (or knows with another type) arrive as strings, the data is a copy, and an empty body
    /// is empty data only with a content type.
    /// </summary>
    private CloudEvent Copy(InMemoryMessage message, KeyValuePair<CloudEventAttribute, object>[] attributes)
    {
        var cloudEvent = new CloudEvent(message.SpecVersion!, _extensions);
        foreach (var (attribute, value) in attributes)
        {
            if (!attribute.IsExtension)
            {
                cloudEvent[attribute] = value is byte[] bytes ? bytes.ToArray() : value;
            }
            else if (cloudEvent.GetAttribute(attribute.Name) is { } known && known.Type == attribute.Type)
            {
                cloudEvent[known] = value is byte[] bytes ? bytes.ToArray() : value;
            }
            else
            {
                cloudEvent.SetAttributeFromString(attribute.Name, attribute.Format(value));
            }
        }
        if (message.ContentType is not null)
        {
            cloudEvent.DataContentType = message.ContentType;
        }
        if (message.Body.Length > 0 || message.ContentType is not null)
        {
            cloudEvent.Data = message.Body.ToArray();
        }
        return cloudEvent;
    }

    internal void Remove(InMemoryReceiver receiver) => _receivers.TryRemove(receiver, out _);

    internal TimeProvider Time => _time;

    internal int CrashDeliveryLimit => _broker.Options.CrashDeliveryLimit;

    private DeadLetteredEvent ToDeadLettered(InMemoryMessage message, string subscription)
    {
        CloudEvent? cloudEvent = null;
        try
        {
            cloudEvent = Decode(message);
        }
        catch (Exception)
        {
            // Invalid messages are dead-lettered as they came, whatever their decoder throws; the raw body is still available.
        }
        return new DeadLetteredEvent
        {
            DeadLetterId = message.MessageId,
            Event = cloudEvent,
            Body = message.Body,
            Metadata = DeadLetterMetadata.FromProperties(k => message.Properties.GetValueOrDefault(k), subscription, message.DeliveryCount, DeadLetterReason.Unknown),
        };
    }
}
