using Microsoft.Azure.Amqp.Encoding;

namespace Messaging.LocalServiceBus.State;

/// <summary>Result of handing a message to a receiver.</summary>
internal readonly record struct Delivery(BrokeredMessage Message, uint PriorDeliveries, Guid? LockToken, DateTime LockedUntil, MessageStore Store);

/// <summary>
/// All entities and messages of the namespace. One lock guards everything: this is test infrastructure, where
/// simple and obviously correct beats throughput. Consumers are signalled only after the lock is released.
/// </summary>
internal sealed class ServiceBusNamespace(Action<string>? log)
{
    public const string ScheduledEnqueueTimeAnnotation = "x-opt-scheduled-enqueue-time";
    public const string DeadLetterReasonProperty = "DeadLetterReason";
    public const string DeadLetterErrorDescriptionProperty = "DeadLetterErrorDescription";

    /// <summary>DeadLetterReason and description of a message without session id forwarded to a session-enabled subscription.</summary>
    public const string SessionIdIsNullReason = "Session ID is null";
    public const string SessionIdIsNullDescription = "Session enabled entity doesn't allow a message whose session identifier is null.";

    readonly Lock gate = new();
    readonly Dictionary<string, MessageEntity> queues = new(StringComparer.OrdinalIgnoreCase);
    readonly Dictionary<string, TopicEntity> topics = new(StringComparer.OrdinalIgnoreCase);

    // ---------------------------------------------------------------- topology

    public void CreateQueue(string name, LocalQueueOptions options)
    {
        ValidateName(name);
        ValidateQueueOptions(options);
        lock (gate)
        {
            if (queues.ContainsKey(name) || topics.ContainsKey(name))
            {
                throw ServiceBusErrorException.AlreadyExists(name);
            }

            queues.Add(name, new MessageEntity(name, EntitySettings.From(options), options, topic: null));
        }
    }

    public void UpdateQueue(string name, LocalQueueOptions options)
    {
        ValidateQueueOptions(options);
        lock (gate)
        {
            var queue = queues.GetValueOrDefault(name) ?? throw ServiceBusErrorException.EntityNotFound(name);
            EnsureSessionsUnchanged(queue, options.RequiresSession);
            queue.Settings = EntitySettings.From(options);
            queue.Options = options;
            queue.UpdatedAt = DateTime.UtcNow;
        }
    }

    public void CreateTopic(string name, LocalTopicOptions options)
    {
        ValidateName(name);
        if (options.RequiresDuplicateDetection || options.EnablePartitioning)
        {
            throw ServiceBusErrorException.NotSupported("Duplicate detection and partitioning are not supported by the local Service Bus endpoint.");
        }

        lock (gate)
        {
            if (queues.ContainsKey(name) || topics.ContainsKey(name))
            {
                throw ServiceBusErrorException.AlreadyExists(name);
            }

            topics.Add(name, new TopicEntity(name, options));
        }
    }

    public void UpdateTopic(string name, LocalTopicOptions options)
    {
        lock (gate)
        {
            var topic = topics.GetValueOrDefault(name) ?? throw ServiceBusErrorException.EntityNotFound(name);
            topic.Options = options;
            topic.UpdatedAt = DateTime.UtcNow;
        }
    }

    public void CreateSubscription(string topicName, string name, LocalSubscriptionOptions options)
    {
        ValidateName(name);
        ValidateSubscriptionOptions(options);
        lock (gate)
        {
            var topic = topics.GetValueOrDefault(topicName) ?? throw ServiceBusErrorException.EntityNotFound(topicName);
            if (topic.Subscriptions.ContainsKey(name))
            {
                throw ServiceBusErrorException.AlreadyExists($"{topicName}/Subscriptions/{name}");
            }

            topic.Subscriptions.Add(name, new MessageEntity($"{topic.Name}/Subscriptions/{name}", EntitySettings.From(options), options, topic));
        }
    }

    public void UpdateSubscription(string topicName, string name, LocalSubscriptionOptions options)
    {
        ValidateSubscriptionOptions(options);
        lock (gate)
        {
            var subscription = topics.TryGetValue(topicName, out var topic) ? topic.Subscriptions.GetValueOrDefault(name) : null;
            if (subscription is null)
            {
                throw ServiceBusErrorException.EntityNotFound($"{topicName}/Subscriptions/{name}");
            }

            EnsureSessionsUnchanged(subscription, options.RequiresSession);
            subscription.Settings = EntitySettings.From(options);
            subscription.Options = options;
            subscription.UpdatedAt = DateTime.UtcNow;
        }
    }

    public bool DeleteQueue(string name)
    {
        MessageEntity? removed;
        lock (gate)
        {
            queues.Remove(name, out removed);
        }

        DetachReceivers(removed is null ? [] : [removed]);
        return removed is not null;
    }

    public bool DeleteTopic(string name)
    {
        TopicEntity? removed;
        lock (gate)
        {
            topics.Remove(name, out removed);
        }

        DetachReceivers(removed is null ? [] : [.. removed.Subscriptions.Values]);
        return removed is not null;
    }

    public bool DeleteSubscription(string topicName, string name)
    {
        MessageEntity? removed = null;
        lock (gate)
        {
            if (topics.TryGetValue(topicName, out var topic))
            {
                topic.Subscriptions.Remove(name, out removed);
            }
        }

        DetachReceivers(removed is null ? [] : [removed]);
        return removed is not null;
    }

    // Service Bus detaches the links of a deleted entity; their clients then see the entity as not found.
    void DetachReceivers(IReadOnlyList<MessageEntity> entities)
    {
        foreach (var entity in entities)
        {
            List<IStoreConsumer> consumers;
            lock (gate)
            {
                consumers = [.. entity.Active.Consumers, .. entity.DeadLetter.Consumers];
            }

            foreach (var consumer in consumers)
            {
                consumer.Detach(ServiceBusErrorException.EntityNotFound(entity.Path));
            }
        }
    }

    /// <summary>
    /// Injected fault: detaches every receiver link of one receive source (as <see cref="ResolveStore"/> reads it) with
    /// amqp:link:detach-forced. The locks those links hold stay until they expire, as for any closed link.
    /// </summary>
    public int ForceDetachReceivers(string path)
    {
        var store = ResolveStore(path);
        List<IStoreConsumer> consumers;
        lock (gate)
        {
            consumers = [.. store.Consumers];
        }

        int detached = 0;
        foreach (var consumer in consumers)
        {
            if (consumer.Detach(ServiceBusErrorException.DetachForced(consumer.Name, store.Path)))
            {
                detached++;
            }
        }

        return detached;
    }

    /// <summary>
    /// Injected fault: every lock held on one receive source (as <see cref="ResolveStore"/> reads it) expires now, as
    /// <see cref="Tick"/> expires a lock whose duration has passed: the message is available again (or dead-lettered once
    /// MaxDeliveryCount is used up) and its lock token is lost. Returns how many locks were still valid.
    /// </summary>
    public int ExpireLocks(string path, DateTime now)
    {
        var store = ResolveStore(path);
        var toSignal = new List<MessageStore>();
        var toDetach = new List<(IStoreConsumer Holder, string SessionId)>();
        int expired = 0;
        lock (gate)
        {
            expired += store.Sessions.Values.Count(s => s.LockedUntil > now);
            ExpireSessionsLocked(store, now, toDetach, toSignal, all: true);
            foreach (var message in store.Messages.Values.Where(m => m.LockToken is not null).ToList())
            {
                if (message.IsLocked(now))
                {
                    expired++;
                }

                ReleaseLockLocked(store, message);
                ReturnToStoreLocked(store, message, now, toSignal);
            }
        }

        Detach(toDetach);
        SignalAll(toSignal);
        return expired;
    }

    /// <summary>Completes when messages of the store may have become available (or a session was released).</summary>
    public Task ChangedAsync(MessageStore store)
    {
        lock (gate)
        {
            return store.Changed.Task;
        }
    }

    /// <summary>Receiver links attached to a receive source (they leave once their detach has completed).</summary>
    public int CountConsumers(string path)
    {
        var store = ResolveStore(path);
        lock (gate)
        {
            return store.Consumers.Count;
        }
    }

    public MessageEntity? FindQueue(string name)
    {
        lock (gate)
        {
            return queues.GetValueOrDefault(name);
        }
    }

    public TopicEntity? FindTopic(string name)
    {
        lock (gate)
        {
            return topics.GetValueOrDefault(name);
        }
    }

    public MessageEntity? FindSubscription(string topicName, string name)
    {
        lock (gate)
        {
            return topics.TryGetValue(topicName, out var topic) ? topic.Subscriptions.GetValueOrDefault(name) : null;
        }
    }

    public IReadOnlyList<MessageEntity> ListQueues()
    {
        lock (gate)
        {
            return [.. queues.Values.OrderBy(q => q.Path, StringComparer.OrdinalIgnoreCase)];
        }
    }

    public IReadOnlyList<TopicEntity> ListTopics()
    {
        lock (gate)
        {
            return [.. topics.Values.OrderBy(t => t.Name, StringComparer.OrdinalIgnoreCase)];
        }
    }

    public IReadOnlyList<MessageEntity> ListSubscriptions(string topicName)
    {
        lock (gate)
        {
            var topic = topics.GetValueOrDefault(topicName) ?? throw ServiceBusErrorException.EntityNotFound(topicName);
            return [.. topic.Subscriptions.Values.OrderBy(s => s.Path, StringComparer.OrdinalIgnoreCase)];
        }
    }

    public (long Active, long DeadLetter, long Scheduled) CountMessages(MessageEntity entity)
    {
        lock (gate)
        {
            long active = entity.Active.Messages.Values.Count(m => m.State == MessageState.Active);
            long scheduled = entity.Active.Messages.Values.Count(m => m.State == MessageState.Scheduled);
            return (active, entity.DeadLetter.Messages.Count, scheduled);
        }
    }

    // Service Bus cannot turn sessions on or off on an existing queue or subscription.
    static void EnsureSessionsUnchanged(MessageEntity entity, bool requiresSession)
    {
        if (entity.Settings.RequiresSession != requiresSession)
        {
            throw ServiceBusErrorException.BadArgument($"RequiresSession cannot be changed on the existing entity '{entity.Path}'.");
        }
    }

    static void ValidateName(string name)
    {
        if (string.IsNullOrWhiteSpace(name) || name.Contains('$', StringComparison.Ordinal) || name.StartsWith('/') || name.EndsWith('/'))
        {
            throw ServiceBusErrorException.BadArgument($"'{name}' is not a valid entity name.");
        }
    }

    static void ValidateQueueOptions(LocalQueueOptions options)
    {
        if (options.RequiresDuplicateDetection || options.EnablePartitioning)
        {
            throw ServiceBusErrorException.NotSupported("Duplicate detection and partitioning are not supported by the local Service Bus endpoint.");
        }

        if (options.ForwardTo is not null)
        {
            throw ServiceBusErrorException.NotSupported("Auto-forwarding (ForwardTo) is not supported by the local Service Bus endpoint.");
        }

        ValidateCommon(options.LockDuration, options.MaxDeliveryCount, options.DefaultMessageTimeToLive);
    }

    static void ValidateSubscriptionOptions(LocalSubscriptionOptions options)
    {
        if (options.ForwardTo is not null)
        {
            throw ServiceBusErrorException.NotSupported("Auto-forwarding (ForwardTo) is not supported by the local Service Bus endpoint.");
        }

        ValidateCommon(options.LockDuration, options.MaxDeliveryCount, options.DefaultMessageTimeToLive);
    }

    static void ValidateCommon(TimeSpan lockDuration, int maxDeliveryCount, TimeSpan ttl)
    {
        // Service Bus allows a lock duration of at most five minutes and at least one delivery.
        if (lockDuration <= TimeSpan.Zero || lockDuration > TimeSpan.FromMinutes(5))
        {
            throw ServiceBusErrorException.BadArgument($"LockDuration must be greater than zero and at most 5 minutes; got {lockDuration}.");
        }

        if (maxDeliveryCount < 1)
        {
            throw ServiceBusErrorException.BadArgument($"MaxDeliveryCount must be at least 1; got {maxDeliveryCount}.");
        }

        if (ttl <= TimeSpan.Zero)
        {
            throw ServiceBusErrorException.BadArgument($"DefaultMessageTimeToLive must be positive; got {ttl}.");
        }
    }

    // ---------------------------------------------------------------- addressing

    /// <summary>Resolves a receive address: queue, topic/Subscriptions/sub, either with /$DeadLetterQueue (any casing).</summary>
    public MessageStore ResolveStore(string path)
    {
        var segments = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        bool deadLetter = segments.Length > 0 && string.Equals(segments[^1], "$DeadLetterQueue", StringComparison.OrdinalIgnoreCase);
        if (deadLetter)
        {
            segments = segments[..^1];
        }

        lock (gate)
        {
            MessageEntity? entity = segments.Length switch
            {
                1 => queues.GetValueOrDefault(segments[0]),
                3 when string.Equals(segments[1], "Subscriptions", StringComparison.OrdinalIgnoreCase)
                    => topics.TryGetValue(segments[0], out var topic) ? topic.Subscriptions.GetValueOrDefault(segments[2]) : null,
                _ => null,
            };
            if (entity is null)
            {
                throw ServiceBusErrorException.EntityNotFound(path);
            }

            return deadLetter ? entity.DeadLetter : entity.Active;
        }
    }

    /// <summary>Checks a send address: a queue or a topic (sending to a subscription or sub-queue is not allowed).</summary>
    public void EnsureSendTarget(string path)
    {
        lock (gate)
        {
            if (!queues.ContainsKey(path) && !topics.ContainsKey(path))
            {
                throw ServiceBusErrorException.EntityNotFound(path);
            }
        }
    }

    /// <summary>Resolves the entity a $management node belongs to: a send target or a receive source.</summary>
    public (MessageStore? Store, string SendTarget) ResolveManagementOwner(string path)
    {
        lock (gate)
        {
            if (queues.ContainsKey(path) || topics.ContainsKey(path))
            {
                return (queues.TryGetValue(path, out var queue) ? queue.Active : null, path);
            }
        }

        return (ResolveStore(path), path);
    }

    // ---------------------------------------------------------------- sending

    /// <summary>Enqueues a message sent to a queue or topic; returns the assigned sequence number.</summary>
    public long Send(string target, MessageContent content, DateTime now)
    {
        var toSignal = new List<MessageStore>();
        long sequenceNumber;
        lock (gate)
        {
            sequenceNumber = SendLocked(target, content, now, toSignal, forceScheduledAt: null);
        }

        SignalAll(toSignal);
        return sequenceNumber;
    }

    /// <summary>Schedules messages (the schedule-message operation); returns their sequence numbers.</summary>
    public long[] Schedule(string target, IReadOnlyList<MessageContent> contents, DateTime now)
    {
        var toSignal = new List<MessageStore>();
        var numbers = new long[contents.Count];
        lock (gate)
        {
            for (int i = 0; i < contents.Count; i++)
            {
                var at = contents[i].GetAnnotation(ScheduledEnqueueTimeAnnotation) as DateTime?
                    ?? throw ServiceBusErrorException.BadArgument("A scheduled message must carry the x-opt-scheduled-enqueue-time annotation.");
                numbers[i] = SendLocked(target, contents[i], now, toSignal, at);
            }
        }

        SignalAll(toSignal);
        return numbers;
    }

    public void CancelScheduled(string target, IEnumerable<long> sequenceNumbers)
    {
        lock (gate)
        {
            foreach (var sequenceNumber in sequenceNumbers)
            {
                if (queues.TryGetValue(target, out var queue))
                {
                    if (queue.Active.Messages.TryGetValue(sequenceNumber, out var message) && message.State == MessageState.Scheduled)
                    {
                        queue.Active.Messages.Remove(sequenceNumber);
                    }
                }
                else if (topics.TryGetValue(target, out var topic))
                {
                    topic.Scheduled.Remove(sequenceNumber);
                }
                else
                {
                    throw ServiceBusErrorException.EntityNotFound(target);
                }
            }
        }
    }

    long SendLocked(string target, MessageContent content, DateTime now, List<MessageStore> toSignal, DateTime? forceScheduledAt)
    {
        var scheduledAt = forceScheduledAt ?? content.GetAnnotation(ScheduledEnqueueTimeAnnotation) as DateTime?;
        bool scheduled = scheduledAt is { } at && at.ToUniversalTime() > now;
        if (queues.TryGetValue(target, out var queue))
        {
            if (queue.Settings.RequiresSession && content.Properties.GroupId is null)
            {
                throw ServiceBusErrorException.NotAllowed(
                    $"The SessionId was not set on a message, and it cannot be sent to the entity '{queue.Path}'. Entities that have session support enabled can only receive messages that have the SessionId set to a valid value.");
            }

            var message = NewMessage(++queue.LastSequenceNumber, content, now, queue.Settings.DefaultMessageTimeToLive);
            if (scheduled)
            {
                message.State = MessageState.Scheduled;
                message.ScheduledEnqueueTime = scheduledAt!.Value.ToUniversalTime();
            }

            queue.Active.Messages.Add(message.SequenceNumber, message);
            toSignal.Add(queue.Active);
            return message.SequenceNumber;
        }

        if (topics.TryGetValue(target, out var topic))
        {
            long sequenceNumber = ++topic.LastSequenceNumber;
            if (scheduled)
            {
                var message = NewMessage(sequenceNumber, content, now, topic.Options.DefaultMessageTimeToLive);
                message.State = MessageState.Scheduled;
                message.ScheduledEnqueueTime = scheduledAt!.Value.ToUniversalTime();
                topic.Scheduled.Add(sequenceNumber, message);
                return sequenceNumber;
            }

            FanOutLocked(topic, content, now, toSignal);
            return sequenceNumber;
        }

        throw ServiceBusErrorException.EntityNotFound(target);
    }

    // Every subscription has the default TrueFilter rule, so each one receives a copy.
    void FanOutLocked(TopicEntity topic, MessageContent content, DateTime now, List<MessageStore> toSignal)
    {
        foreach (var subscription in topic.Subscriptions.Values)
        {
            var ttl = Min(topic.Options.DefaultMessageTimeToLive, subscription.Settings.DefaultMessageTimeToLive);
            var copy = NewMessage(++subscription.LastSequenceNumber, content, now, ttl);
            if (subscription.Settings.RequiresSession && content.Properties.GroupId is null)
            {
                // A session-enabled subscription cannot hold a message without a session id: Service Bus dead-letters it.
                MoveToDeadLetterLocked(subscription.Active, copy, SessionIdIsNullReason, SessionIdIsNullDescription, null, now, toSignal);
                continue;
            }

            subscription.Active.Messages.Add(copy.SequenceNumber, copy);
            toSignal.Add(subscription.Active);
        }
    }

    static BrokeredMessage NewMessage(long sequenceNumber, MessageContent content, DateTime now, TimeSpan entityTtl)
    {
        var ttl = entityTtl;
        if (content.HeaderTtl is { } headerTtl && headerTtl > 0)
        {
            ttl = Min(ttl, TimeSpan.FromMilliseconds(headerTtl));
        }

        bool unlimited = ttl >= DateTime.MaxValue - now;
        return new BrokeredMessage
        {
            SequenceNumber = sequenceNumber,
            Content = content,
            EnqueuedTime = now,
            TimeToLive = unlimited ? null : ttl,
            ExpiresAt = unlimited ? null : now + ttl,
        };
    }

    static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    // ---------------------------------------------------------------- receiving

    public void AddConsumer(MessageStore store, IStoreConsumer consumer)
    {
        lock (gate)
        {
            store.Consumers.Add(consumer);
        }

        consumer.Signal();
    }

    public void RemoveConsumer(MessageStore store, IStoreConsumer consumer)
    {
        lock (gate)
        {
            store.Consumers.Remove(consumer);
        }
    }

    /// <summary>
    /// Takes the next deliverable message: locks it (peek-lock) or removes it (receive-and-delete). On a session-enabled
    /// store only a session receiver that still holds its session gets messages, those of its session in sequence order.
    /// </summary>
    public Delivery? TryTakeNext(MessageStore store, bool peekLock, DateTime now, IStoreConsumer? sessionHolder = null, string? sessionId = null)
    {
        lock (gate)
        {
            SessionLock? session = null;
            if (store.IsSessionful)
            {
                if (sessionId is null || !store.Sessions.TryGetValue(sessionId, out session) || session.Holder != sessionHolder || session.LockedUntil <= now)
                {
                    return null;
                }
            }

            foreach (var message in store.Messages.Values)
            {
                if (message.State != MessageState.Active || message.IsLocked(now) || IsExpired(store, message, now)
                    || (session is not null && !string.Equals(message.SessionId, session.SessionId, StringComparison.Ordinal)))
                {
                    continue;
                }

                var delivery = DeliverLocked(store, message, peekLock, now);
                if (session is not null && delivery.LockToken is not null)
                {
                    // A message of a session is locked for as long as its session is.
                    message.LockedUntil = session.LockedUntil;
                    delivery = delivery with { LockedUntil = session.LockedUntil };
                }

                return delivery;
            }

            return null;
        }
    }

    // ---------------------------------------------------------------- sessions

    /// <summary>
    /// Locks a session for <paramref name="holder"/>: the given one (which need not have messages; another receiver holding
    /// it is com.microsoft:session-cannot-be-locked), or else the unlocked session whose oldest available message is
    /// oldest. Null when no session is available now.
    /// </summary>
    public SessionLock? TryLockSession(MessageStore store, string? sessionId, IStoreConsumer holder, DateTime now)
    {
        if (!store.IsSessionful)
        {
            throw ServiceBusErrorException.NotAllowed(
                $"A sessionful message receiver cannot be created on an entity that does not require sessions ('{store.Path}'). Ensure RequiresSession is set to true when creating a Queue or Subscription to enable sessionful behavior.");
        }

        var toDetach = new List<(IStoreConsumer Holder, string SessionId)>();
        var toSignal = new List<MessageStore>();
        SessionLock? locked = null;
        lock (gate)
        {
            ExpireSessionsLocked(store, now, toDetach, toSignal);
            if (sessionId is not null)
            {
                if (store.Sessions.ContainsKey(sessionId))
                {
                    throw ServiceBusErrorException.SessionCannotBeLocked(sessionId);
                }

                locked = LockSessionLocked(store, sessionId, holder, now);
            }
            else
            {
                foreach (var message in store.Messages.Values)
                {
                    if (message.SessionId is { } candidate && message.State == MessageState.Active && !message.IsLocked(now)
                        && !IsExpired(store, message, now) && !store.Sessions.ContainsKey(candidate))
                    {
                        locked = LockSessionLocked(store, candidate, holder, now);
                        break;
                    }
                }
            }
        }

        Detach(toDetach);
        SignalAll(toSignal);
        return locked;
    }

    SessionLock LockSessionLocked(MessageStore store, string sessionId, IStoreConsumer holder, DateTime now)
    {
        var session = new SessionLock(sessionId, holder) { LockedUntil = now + store.Entity.Settings.LockDuration };
        store.Sessions[sessionId] = session;
        return session;
    }

    /// <summary>Renews a session lock (renew-session-lock) and returns its new expiry.</summary>
    public DateTime RenewSessionLock(MessageStore store, string sessionId, DateTime now)
    {
        lock (gate)
        {
            var session = ValidSessionLocked(store, sessionId, now);
            session.LockedUntil = now + store.Entity.Settings.LockDuration;
            foreach (var message in store.Messages.Values.Where(m => m.LockToken is not null && string.Equals(m.SessionId, sessionId, StringComparison.Ordinal)))
            {
                message.LockedUntil = session.LockedUntil;
            }

            return session.LockedUntil;
        }
    }

    public byte[]? GetSessionState(MessageStore store, string sessionId, DateTime now)
    {
        lock (gate)
        {
            ValidSessionLocked(store, sessionId, now);
            return store.SessionStates.GetValueOrDefault(sessionId);
        }
    }

    public void SetSessionState(MessageStore store, string sessionId, byte[]? state, DateTime now)
    {
        lock (gate)
        {
            ValidSessionLocked(store, sessionId, now);
            if (state is null)
            {
                store.SessionStates.Remove(sessionId);
            }
            else
            {
                store.SessionStates[sessionId] = state;
            }
        }
    }

    SessionLock ValidSessionLocked(MessageStore store, string sessionId, DateTime now)
    {
        if (!store.IsSessionful)
        {
            throw ServiceBusErrorException.NotAllowed($"'{store.Path}' is not a session-enabled entity.");
        }

        if (!store.Sessions.TryGetValue(sessionId, out var session) || session.LockedUntil <= now)
        {
            throw ServiceBusErrorException.SessionLockLost(sessionId);
        }

        return session;
    }

    /// <summary>
    /// A session receiver link closed: its session lock is released at once (as Service Bus does when a session receiver
    /// closes), and the messages it had received and not settled are available again, in sequence order, with their
    /// delivery counted.
    /// </summary>
    public void ReleaseSessions(MessageStore store, IStoreConsumer holder, DateTime now)
    {
        var toSignal = new List<MessageStore>();
        lock (gate)
        {
            foreach (var session in store.Sessions.Values.Where(s => s.Holder == holder).ToList())
            {
                ReleaseSessionLocked(store, session, now, toSignal);
            }
        }

        SignalAll(toSignal);
    }

    void ReleaseSessionLocked(MessageStore store, SessionLock session, DateTime now, List<MessageStore> toSignal)
    {
        store.Sessions.Remove(session.SessionId);
        foreach (var message in store.Messages.Values.Where(m => m.LockToken is not null && string.Equals(m.SessionId, session.SessionId, StringComparison.Ordinal)).ToList())
        {
            ReleaseLockLocked(store, message);
            ReturnToStoreLocked(store, message, now, toSignal);
        }

        toSignal.Add(store);
    }

    // Session locks whose time is up: released like a closed receiver's, and the receiver is told (session-lock-lost).
    void ExpireSessionsLocked(MessageStore store, DateTime now, List<(IStoreConsumer Holder, string SessionId)> toDetach, List<MessageStore> toSignal, bool all = false)
    {
        if (!store.IsSessionful)
        {
            return;
        }

        foreach (var session in store.Sessions.Values.Where(s => all || s.LockedUntil <= now).ToList())
        {
            ReleaseSessionLocked(store, session, now, toSignal);
            toDetach.Add((session.Holder, session.SessionId));
        }
    }

    static void Detach(List<(IStoreConsumer Holder, string SessionId)> toDetach)
    {
        foreach (var (holder, sessionId) in toDetach)
        {
            holder.Detach(ServiceBusErrorException.SessionLockLost(sessionId));
        }
    }

    Delivery DeliverLocked(MessageStore store, BrokeredMessage message, bool peekLock, DateTime now)
    {
        uint prior = (uint)message.DeliveryCount;
        message.DeliveryCount++;
        if (!peekLock)
        {
            store.Messages.Remove(message.SequenceNumber);
            return new Delivery(message, prior, null, default, store);
        }

        var token = Guid.NewGuid();
        if (message.LockToken is { } previous)
        {
            store.Locks.Remove(previous);
        }

        message.LockToken = token;
        message.LockedUntil = now + store.Entity.Settings.LockDuration;
        store.Locks[token] = message;
        return new Delivery(message, prior, token, message.LockedUntil, store);
    }

    static bool IsExpired(MessageStore store, BrokeredMessage message, DateTime now) =>
        !store.IsDeadLetter && message.ExpiresAt is { } expiresAt && expiresAt <= now;

    BrokeredMessage TakeLockedMessage(MessageStore store, Guid lockToken, DateTime now)
    {
        if (store.IsSessionful)
        {
            // A message of a session is settled under its session's lock: once that is gone, so is the message's.
            if (!store.Locks.TryGetValue(lockToken, out var locked) || locked.LockToken != lockToken || locked.SessionId is not { } sessionId
                || !store.Sessions.TryGetValue(sessionId, out var session) || session.LockedUntil <= now)
            {
                throw ServiceBusErrorException.SessionLockLost(store.Locks.GetValueOrDefault(lockToken)?.SessionId ?? "(unknown)");
            }

            return locked;
        }

        if (!store.Locks.TryGetValue(lockToken, out var message) || message.LockToken != lockToken || message.LockedUntil <= now)
        {
            throw ServiceBusErrorException.LockLost();
        }

        return message;
    }

    void ReleaseLockLocked(MessageStore store, BrokeredMessage message)
    {
        if (message.LockToken is { } token)
        {
            store.Locks.Remove(token);
        }

        message.LockToken = null;
        message.LockedUntil = default;
    }

    public void Complete(MessageStore store, Guid lockToken, DateTime now)
    {
        lock (gate)
        {
            var message = TakeLockedMessage(store, lockToken, now);
            ReleaseLockLocked(store, message);
            store.Messages.Remove(message.SequenceNumber);
        }
    }

    public void Abandon(MessageStore store, Guid lockToken, IReadOnlyList<KeyValuePair<string, object>>? propertiesToModify, DateTime now)
    {
        var toSignal = new List<MessageStore>();
        lock (gate)
        {
            var message = TakeLockedMessage(store, lockToken, now);
            if (propertiesToModify is { Count: > 0 })
            {
                message.Content = message.Content.WithApplicationProperties(propertiesToModify);
            }

            ReleaseLockLocked(store, message);
            ReturnToStoreLocked(store, message, now, toSignal);
        }

        SignalAll(toSignal);
    }

    public void Defer(MessageStore store, Guid lockToken, IReadOnlyList<KeyValuePair<string, object>>? propertiesToModify, DateTime now)
    {
        lock (gate)
        {
            var message = TakeLockedMessage(store, lockToken, now);
            if (propertiesToModify is { Count: > 0 })
            {
                message.Content = message.Content.WithApplicationProperties(propertiesToModify);
            }

            ReleaseLockLocked(store, message);
            message.State = MessageState.Deferred;
        }
    }

    public void DeadLetter(MessageStore store, Guid lockToken, string? reason, string? description, IReadOnlyList<KeyValuePair<string, object>>? propertiesToModify, DateTime now)
    {
        var toSignal = new List<MessageStore>();
        lock (gate)
        {
            var message = TakeLockedMessage(store, lockToken, now);
            ReleaseLockLocked(store, message);
            if (store.IsDeadLetter)
            {
                // The dead-letter sub-queue has no dead-letter queue of its own: the message stays where it is, unlocked.
                ReturnToStoreLocked(store, message, now, toSignal);
            }
            else
            {
                MoveToDeadLetterLocked(store, message, reason, description, propertiesToModify, now, toSignal);
            }
        }

        SignalAll(toSignal);
    }

    public DateTime RenewLock(MessageStore store, Guid lockToken, DateTime now)
    {
        lock (gate)
        {
            if (store.IsSessionful)
            {
                throw ServiceBusErrorException.NotAllowed("The lock of a message of a session cannot be renewed: renew the session lock (renew-session-lock).");
            }

            var message = TakeLockedMessage(store, lockToken, now);
            message.LockedUntil = now + store.Entity.Settings.LockDuration;
            return message.LockedUntil;
        }
    }

    /// <summary>After a failed delivery: back to the queue, or to the dead-letter queue once MaxDeliveryCount is used up.</summary>
    void ReturnToStoreLocked(MessageStore store, BrokeredMessage message, DateTime now, List<MessageStore> toSignal)
    {
        int max = store.Entity.Settings.MaxDeliveryCount;
        if (!store.IsDeadLetter && message.DeliveryCount >= max)
        {
            MoveToDeadLetterLocked(store, message, "MaxDeliveryCountExceeded",
                $"Message could not be consumed after {max} delivery attempts.", null, now, toSignal);
            return;
        }

        if (message.State == MessageState.Deferred)
        {
            return;
        }

        message.State = MessageState.Active;
        toSignal.Add(store);
    }

    void MoveToDeadLetterLocked(MessageStore store, BrokeredMessage message, string? reason, string? description,
        IReadOnlyList<KeyValuePair<string, object>>? propertiesToModify, DateTime now, List<MessageStore> toSignal)
    {
        store.Messages.Remove(message.SequenceNumber);
        var changes = new List<KeyValuePair<string, object>>();
        if (reason is not null)
        {
            changes.Add(new(DeadLetterReasonProperty, reason));
        }

        if (description is not null)
        {
            changes.Add(new(DeadLetterErrorDescriptionProperty, description));
        }

        if (propertiesToModify is not null)
        {
            changes.AddRange(propertiesToModify);
        }

        message.Content = message.Content.WithApplicationProperties(changes);
        var forwardTo = store.Entity.Settings.ForwardDeadLetteredMessagesTo;
        if (forwardTo is not null && (queues.ContainsKey(forwardTo) || topics.ContainsKey(forwardTo)))
        {
            SendLocked(forwardTo, message.Content, now, toSignal, forceScheduledAt: null);
            return;
        }

        message.State = MessageState.Active;
        message.DeadLetterSource = store.Entity.Path;
        message.ExpiresAt = null;
        store.Entity.DeadLetter.Messages[message.SequenceNumber] = message;
        toSignal.Add(store.Entity.DeadLetter);
    }

    // ---------------------------------------------------------------- peek and deferral

    public IReadOnlyList<BrokeredMessage> Peek(MessageStore store, long? fromSequenceNumber, int count)
    {
        lock (gate)
        {
            // The SDK remembers where its last peek ended and always sends from-sequence-number.
            long from = fromSequenceNumber ?? 0;
            return store.Messages.Values.Where(m => m.SequenceNumber >= from).Take(Math.Max(count, 0)).ToList();
        }
    }

    public IReadOnlyList<Delivery> ReceiveDeferred(MessageStore store, IReadOnlyList<long> sequenceNumbers, bool peekLock, DateTime now)
    {
        lock (gate)
        {
            var messages = new List<BrokeredMessage>();
            foreach (var sequenceNumber in sequenceNumbers)
            {
                if (!store.Messages.TryGetValue(sequenceNumber, out var message) || message.State != MessageState.Deferred || message.IsLocked(now))
                {
                    throw ServiceBusErrorException.MessageNotFound($"Failed to retrieve the deferred message with sequence number {sequenceNumber}.");
                }

                messages.Add(message);
            }

            return messages.Select(m => DeliverLocked(store, m, peekLock, now)).ToList();
        }
    }

    // ---------------------------------------------------------------- time

    /// <summary>Expires locks, releases scheduled messages and applies time-to-live.</summary>
    public void Tick(DateTime now)
    {
        var toSignal = new List<MessageStore>();
        var toDetach = new List<(IStoreConsumer Holder, string SessionId)>();
        lock (gate)
        {
            foreach (var topic in topics.Values)
            {
                foreach (var due in topic.Scheduled.Values.Where(m => m.ScheduledEnqueueTime <= now).ToList())
                {
                    topic.Scheduled.Remove(due.SequenceNumber);
                    FanOutLocked(topic, due.Content, now, toSignal);
                }

                foreach (var subscription in topic.Subscriptions.Values)
                {
                    ExpireSessionsLocked(subscription.Active, now, toDetach, toSignal);
                    TickEntityLocked(subscription, now, toSignal);
                }
            }

            foreach (var queue in queues.Values)
            {
                ExpireSessionsLocked(queue.Active, now, toDetach, toSignal);
                TickEntityLocked(queue, now, toSignal);
            }
        }

        Detach(toDetach);
        SignalAll(toSignal);
    }

    void TickEntityLocked(MessageEntity entity, DateTime now, List<MessageStore> toSignal)
    {
        foreach (var store in new[] { entity.Active, entity.DeadLetter })
        {
            List<BrokeredMessage>? changed = null;
            foreach (var message in store.Messages.Values)
            {
                bool lockExpired = message.LockToken is not null && message.LockedUntil <= now;
                bool scheduleDue = message.State == MessageState.Scheduled && message.ScheduledEnqueueTime <= now;
                bool expired = message.LockToken is null && message.State != MessageState.Scheduled && IsExpired(store, message, now);
                if (lockExpired || scheduleDue || expired)
                {
                    (changed ??= []).Add(message);
                }
            }

            if (changed is null)
            {
                continue;
            }

            foreach (var message in changed)
            {
                if (message.LockToken is not null && message.LockedUntil <= now)
                {
                    ReleaseLockLocked(store, message);
                    ReturnToStoreLocked(store, message, now, toSignal);
                }
                else if (message.State == MessageState.Scheduled)
                {
                    message.State = MessageState.Active;
                    message.EnqueuedTime = now;
                    message.ExpiresAt = message.TimeToLive is { } ttl ? now + ttl : null;
                    toSignal.Add(store);
                }
                else if (IsExpired(store, message, now))
                {
                    if (entity.Settings.DeadLetteringOnMessageExpiration)
                    {
                        MoveToDeadLetterLocked(store, message, "TTLExpiredException", "The message expired and was dead lettered.", null, now, toSignal);
                    }
                    else
                    {
                        store.Messages.Remove(message.SequenceNumber);
                    }
                }
            }
        }
    }

    void SignalAll(List<MessageStore> stores)
    {
        if (stores.Count == 0)
        {
            return;
        }

        List<IStoreConsumer> consumers;
        var waiters = new List<TaskCompletionSource>();
        lock (gate)
        {
            consumers = stores.Distinct().SelectMany(s => s.Consumers).ToList();
            foreach (var store in stores.Distinct())
            {
                waiters.Add(store.Changed);
                store.Changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }
        }

        foreach (var waiter in waiters)
        {
            waiter.TrySetResult();
        }

        foreach (var consumer in consumers)
        {
            try
            {
                consumer.Signal();
            }
            catch (Exception exception)
            {
                log?.Invoke($"signalling a receiver failed: {exception.Message}");
            }
        }
    }

    /// <summary>Annotations Service Bus adds to a delivered message.</summary>
    public static List<KeyValuePair<string, object>> BrokerAnnotations(BrokeredMessage message, Guid? lockToken, DateTime lockedUntil)
    {
        var annotations = new List<KeyValuePair<string, object>>
        {
            new("x-opt-sequence-number", message.SequenceNumber),
            new("x-opt-enqueue-sequence-number", message.SequenceNumber),
            new("x-opt-enqueued-time", message.EnqueuedTime),
        };
        if (lockToken is { } token)
        {
            annotations.Add(new("x-opt-lock-token", token));
            annotations.Add(new("x-opt-locked-until", lockedUntil));
        }

        if (message.DeadLetterSource is { } source)
        {
            annotations.Add(new("x-opt-deadletter-source", source));
        }

        // The SDK reads this as an AMQP int: 0 active, 1 deferred, 2 scheduled.
        annotations.Add(new("x-opt-message-state", message.State switch
        {
            MessageState.Deferred => 1,
            MessageState.Scheduled => 2,
            _ => 0,
        }));

        return annotations;
    }

    public static MapKey Symbol(string key) => new(new AmqpSymbol(key));
}
