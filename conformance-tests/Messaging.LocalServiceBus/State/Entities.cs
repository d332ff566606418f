namespace Messaging.LocalServiceBus.State;

internal enum MessageState
{
    Active,
    Scheduled,
    Deferred,
}

/// <summary>One copy of a message inside one queue, subscription or dead-letter sub-queue.</summary>
internal sealed class BrokeredMessage
{
    public required long SequenceNumber { get; init; }
    public required MessageContent Content { get; set; }
    public required DateTime EnqueuedTime { get; set; }
    public DateTime? ScheduledEnqueueTime { get; set; }
    public DateTime? ExpiresAt { get; set; }

    /// <summary>The effective time-to-live (the smaller of the message's and the entity's); null when unlimited.</summary>
    public TimeSpan? TimeToLive { get; set; }
    public MessageState State { get; set; }

    /// <summary>Deliveries made so far; the AMQP header carries the value before the current delivery.</summary>
    public int DeliveryCount { get; set; }

    public Guid? LockToken { get; set; }
    public DateTime LockedUntil { get; set; }
    public string? DeadLetterSource { get; set; }

    public bool IsLocked(DateTime now) => LockToken is not null && LockedUntil > now;

    /// <summary>The session the message belongs to (the AMQP group-id), or null.</summary>
    public string? SessionId => Content.Properties.GroupId;
}

/// <summary>
/// The exclusive lock one session receiver link holds on one session of a session-enabled queue or subscription. Every
/// message of the session it receives is locked under it: their locks last as long as the session lock does.
/// </summary>
internal sealed class SessionLock(string sessionId, IStoreConsumer holder)
{
    public string SessionId { get; } = sessionId;
    public IStoreConsumer Holder { get; } = holder;
    public DateTime LockedUntil { get; set; }
}

/// <summary>Entity settings shared by queues and subscriptions.</summary>
internal sealed record EntitySettings(
    TimeSpan LockDuration,
    int MaxDeliveryCount,
    TimeSpan DefaultMessageTimeToLive,
    bool DeadLetteringOnMessageExpiration,
    string? ForwardDeadLetteredMessagesTo,
    bool RequiresSession)
{
    public static EntitySettings From(LocalQueueOptions options) => new(
        options.LockDuration, options.MaxDeliveryCount, options.DefaultMessageTimeToLive, options.DeadLetteringOnMessageExpiration, options.ForwardDeadLetteredMessagesTo,
        options.RequiresSession);

    public static EntitySettings From(LocalSubscriptionOptions options) => new(
        options.LockDuration, options.MaxDeliveryCount, options.DefaultMessageTimeToLive, options.DeadLetteringOnMessageExpiration, options.ForwardDeadLetteredMessagesTo,
        options.RequiresSession);
}

/// <summary>Something that pulls messages from a store (an AMQP receiver link) and must be told when some may be available.</summary>
internal interface IStoreConsumer
{
    /// <summary>The AMQP link name, as Service Bus quotes it in errors.</summary>
    string Name { get; }

    void Signal();

    /// <summary>
    /// Detaches the receiver with the given error (its entity was deleted, or a forced detach was injected);
    /// false when it was already closing.
    /// </summary>
    bool Detach(ServiceBusErrorException error);
}

/// <summary>The messages of a queue or subscription, or of their dead-letter sub-queue.</summary>
internal sealed class MessageStore(MessageEntity entity, bool isDeadLetter)
{
    public MessageEntity Entity { get; } = entity;
    public bool IsDeadLetter { get; } = isDeadLetter;
    public string Path => IsDeadLetter ? Entity.Path + "/$DeadLetterQueue" : Entity.Path;
    public SortedDictionary<long, BrokeredMessage> Messages { get; } = [];
    public Dictionary<Guid, BrokeredMessage> Locks { get; } = [];
    public List<IStoreConsumer> Consumers { get; } = [];

    /// <summary>
    /// True for the active store of a session-enabled entity: only session receivers read it. Its dead-letter sub-queue is
    /// not session-enabled, as on Service Bus.
    /// </summary>
    public bool IsSessionful => !IsDeadLetter && Entity.Settings.RequiresSession;

    /// <summary>Sessions locked by a session receiver now, by session id.</summary>
    public Dictionary<string, SessionLock> Sessions { get; } = new(StringComparer.Ordinal);

    /// <summary>Session state set with set-session-state, by session id.</summary>
    public Dictionary<string, byte[]> SessionStates { get; } = new(StringComparer.Ordinal);

    /// <summary>Completed (and replaced) whenever messages may have become available, for receivers waiting for a session.</summary>
    public TaskCompletionSource Changed { get; set; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

/// <summary>A queue or a subscription: an active store plus its dead-letter sub-queue.</summary>
internal sealed class MessageEntity
{
    public MessageEntity(string path, EntitySettings settings, object options, TopicEntity? topic)
    {
        Path = path;
        Settings = settings;
        Options = options;
        Topic = topic;
        Active = new MessageStore(this, isDeadLetter: false);
        DeadLetter = new MessageStore(this, isDeadLetter: true);
    }

    public string Path { get; }
    public EntitySettings Settings { get; set; }

    /// <summary>The LocalQueueOptions or LocalSubscriptionOptions it was created with (kept for the administration API).</summary>
    public object Options { get; set; }

    public TopicEntity? Topic { get; }
    public MessageStore Active { get; }
    public MessageStore DeadLetter { get; }
    public long LastSequenceNumber { get; set; }
    public DateTime CreatedAt { get; } = DateTime.UtcNow;
    public DateTime UpdatedAt { get; set; } = DateTime.UtcNow;
}

internal sealed class TopicEntity(string name, LocalTopicOptions options)
{
    public string Name { get; } = name;
    public LocalTopicOptions Options { get; set; } = options;
    public Dictionary<string, MessageEntity> Subscriptions { get; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>Messages scheduled on the topic stay here until their time, then fan out.</summary>
    public SortedDictionary<long, BrokeredMessage> Scheduled { get; } = [];

    public long LastSequenceNumber { get; set; }
    public DateTime CreatedAt { get; } = DateTime.UtcNow;
    public DateTime UpdatedAt { get; set; } = DateTime.UtcNow;
}
