using System.Globalization;

namespace Messaging.LocalAws.Sqs;

/// <summary>
/// One standard queue: messages in arrival order (delivery order is best effort, as on SQS), visibility,
/// delays, retention and redrive. Every state change happens under <see cref="_sync"/>; receivers waiting
/// for messages (long polling) are woken through <see cref="_changed"/>.
/// </summary>
internal sealed class SqsQueue
{
    private static readonly TimeSpan PurgeInterval = TimeSpan.FromSeconds(60);

    private readonly Lock _sync = new();
    private readonly List<SqsMessage> _messages = [];
    private readonly Dictionary<string, SqsMessage> _messagesById = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _tags;
    private readonly Dictionary<string, (DateTimeOffset FirstSentAt, string MessageId, string SequenceNumber)> _deduplication = new(StringComparer.Ordinal);
    private long _sequence;
    private TaskCompletionSource _changed = NewSignal();
    private SqsQueueSettings _settings;
    private DateTimeOffset? _lastPurgeAt;

    public SqsQueue(string name, string arn, string url, SqsQueueSettings settings, DateTimeOffset createdAt, IReadOnlyDictionary<string, string>? tags)
    {
        Name = name;
        Arn = arn;
        Url = url;
        _settings = settings;
        CreatedAt = createdAt;
        LastModifiedAt = createdAt;
        _tags = tags is null ? new(StringComparer.Ordinal) : new(tags, StringComparer.Ordinal);
    }

    public string Name { get; }
    public string Arn { get; }
    public string Url { get; }
    public DateTimeOffset CreatedAt { get; }
    public DateTimeOffset LastModifiedAt { get; private set; }
    public bool IsDeleted { get; private set; }

    /// <summary>A snapshot of the settings; changes replace the whole object.</summary>
    public SqsQueueSettings Settings
    {
        get
        {
            lock (_sync)
            {
                return _settings;
            }
        }
    }

    public void ReplaceSettings(SqsQueueSettings settings, DateTimeOffset now)
    {
        lock (_sync)
        {
            _settings = settings;
            LastModifiedAt = now;
            Signal();
        }
    }

    public IReadOnlyDictionary<string, string> GetTags()
    {
        lock (_sync)
        {
            return new Dictionary<string, string>(_tags, StringComparer.Ordinal);
        }
    }

    public void SetTags(IReadOnlyDictionary<string, string> tags)
    {
        lock (_sync)
        {
            foreach (var (key, value) in tags)
            {
                _tags[key] = value;
            }
        }
    }

    public void RemoveTags(IEnumerable<string> keys)
    {
        lock (_sync)
        {
            foreach (var key in keys)
            {
                _tags.Remove(key);
            }
        }
    }

    /// <summary>How long a FIFO queue remembers a deduplication id (from the first send that used it).</summary>
    public static readonly TimeSpan DeduplicationInterval = TimeSpan.FromMinutes(5);

    /// <summary>
    /// Stores a message. On a FIFO queue a message whose deduplication id was accepted within the last 5 minutes (in the
    /// queue, or in its group with <c>DeduplicationScope=messageGroup</c>) is not stored: the send succeeds and answers with
    /// the first message's id and sequence number, as SQS does. Returns the id and sequence number the sender gets.
    /// </summary>
    public (string MessageId, string? SequenceNumber) Enqueue(SqsMessage message, DateTimeOffset now)
    {
        lock (_sync)
        {
            if (_settings.FifoQueue && message.MessageDeduplicationId is { } deduplicationId)
            {
                var key = _settings.DeduplicationScope == "messageGroup" ? $"{message.MessageGroupId}\n{deduplicationId}" : deduplicationId;
                foreach (var stale in _deduplication.Where(pair => now - pair.Value.FirstSentAt >= DeduplicationInterval).Select(pair => pair.Key).ToList())
                {
                    _deduplication.Remove(stale);
                }

                if (_deduplication.TryGetValue(key, out var first))
                {
                    return (first.MessageId, first.SequenceNumber);
                }

                // 20 digits, increasing: SQS documents the number as large, non-consecutive and increasing per group.
                message.SequenceNumber = (++_sequence + 18_000_000_000_000_000_000m).ToString("0", CultureInfo.InvariantCulture);
                _deduplication[key] = (now, message.MessageId, message.SequenceNumber);
            }

            _messages.Add(message);
            _messagesById[message.MessageId] = message;
            Signal();
            return (message.MessageId, message.SequenceNumber);
        }
    }

    /// <summary>
    /// Takes up to <paramref name="maxMessages"/> visible messages. Messages that were already received
    /// <c>maxReceiveCount</c> times are not delivered again: they are handed back in
    /// <see cref="ReceiveScan.DeadLetterMoves"/> for the caller to place in the dead-letter queue (outside
    /// this queue's lock).
    /// </summary>
    public ReceiveScan Receive(int maxMessages, int? visibilityTimeoutOverride, DateTimeOffset now, Func<string, SqsQueue?> findQueueByArn)
    {
        var received = new List<ReceivedMessage>();
        var moves = new List<SqsMessage>();
        SqsQueue? deadLetterQueue = null;
        DateTimeOffset? nextVisibleAt = null;
        lock (_sync)
        {
            if (IsDeleted)
            {
                throw SqsErrors.QueueDoesNotExist();
            }

            var settings = _settings;
            var visibilityTimeout = TimeSpan.FromSeconds(visibilityTimeoutOverride ?? settings.VisibilityTimeout);
            if (settings.RedrivePolicy is { } policy)
            {
                deadLetterQueue = findQueueByArn(policy.DeadLetterTargetArn);
                if (ReferenceEquals(deadLetterQueue, this))
                {
                    deadLetterQueue = null;
                }
            }

            RemoveExpired(now, settings);
            var candidates = settings.FifoQueue ? FifoCandidates(now) : _messages.ToList();
            foreach (var message in candidates)
            {
                if (received.Count >= maxMessages)
                {
                    break;
                }

                if (message.VisibleAt > now)
                {
                    nextVisibleAt = nextVisibleAt is null || message.VisibleAt < nextVisibleAt ? message.VisibleAt : nextVisibleAt;
                    continue;
                }

                if (deadLetterQueue is not null && message.ReceiveCount >= settings.RedrivePolicy!.MaxReceiveCount)
                {
                    _messages.Remove(message);
                    _messagesById.Remove(message.MessageId);
                    moves.Add(message);
                    continue;
                }

                message.ReceiveCount++;
                message.FirstReceivedAt ??= now;
                message.WasReceived = true;
                message.InFlightSince = now;
                message.VisibleAt = now + visibilityTimeout;
                message.CurrentReceiptHandle = SqsReceiptHandle.Create(Arn, message.MessageId);
                received.Add(Snapshot(message));
            }

            return new ReceiveScan(received, moves, deadLetterQueue, nextVisibleAt, _changed.Task);
        }
    }

    /// <summary>
    /// The messages a FIFO receive may take, in the order it takes them: groups with a message in flight are locked (none of
    /// their messages is handed out until it is deleted or visible again); of every other group, its messages from the
    /// oldest on, up to the first that is not visible (delayed), so a group is never received out of order. Groups come in
    /// the order of their oldest message, each group's messages together, so one receive returns as many messages of one
    /// group as it can. A message that is not visible is kept as a candidate so that the caller learns when it will be.
    /// </summary>
    private List<SqsMessage> FifoCandidates(DateTimeOffset now)
    {
        var locked = new HashSet<string>(StringComparer.Ordinal);
        foreach (var message in _messages)
        {
            if (message.WasReceived && message.VisibleAt > now && message.MessageGroupId is { } group)
            {
                locked.Add(group);
            }
        }

        var byGroup = new Dictionary<string, List<SqsMessage>>(StringComparer.Ordinal);
        var order = new List<List<SqsMessage>>();
        var blocked = new HashSet<string>(StringComparer.Ordinal);
        var waiting = new List<SqsMessage>();
        foreach (var message in _messages)
        {
            var group = message.MessageGroupId ?? string.Empty;
            if (locked.Contains(group) || blocked.Contains(group))
            {
                if (message.WasReceived && message.VisibleAt > now)
                {
                    waiting.Add(message); // in flight: the caller learns when its visibility ends
                }

                continue;
            }

            if (message.VisibleAt > now)
            {
                // A delayed message holds back the later messages of its group.
                blocked.Add(group);
                waiting.Add(message);
                continue;
            }

            if (!byGroup.TryGetValue(group, out var list))
            {
                byGroup[group] = list = [];
                order.Add(list);
            }

            list.Add(message);
        }

        return order.SelectMany(list => list).Concat(waiting).ToList();
    }

    /// <summary>Takes a message that exceeded its receive count in <paramref name="sourceArn"/>.</summary>
    public void AcceptDeadLetter(SqsMessage message, string sourceArn, DateTimeOffset now)
    {
        lock (_sync)
        {
            if (IsDeleted)
            {
                return;
            }

            // Identity, body, attributes, original enqueue time and receive count are kept; the message is
            // visible in the dead-letter queue at once, with no receipt handle until it is received there.
            message.VisibleAt = now;
            if (_settings.FifoQueue)
            {
                // Documented: for FIFO queues the enqueue timestamp is reset when a message moves to the dead-letter queue.
                message.SentAt = now;
            }

            message.WasReceived = false;
            message.CurrentReceiptHandle = null;
            message.DeadLetterQueueSourceArn = sourceArn;
            _messages.Add(message);
            _messagesById[message.MessageId] = message;
            Signal();
        }
    }

    public void Delete(string messageId, string receiptHandle)
    {
        lock (_sync)
        {
            // A handle of an already deleted message, or one superseded by a later receive, succeeds without
            // deleting anything: only the most recent receipt handle deletes (DeleteMessage API reference).
            if (_messagesById.TryGetValue(messageId, out var message) && message.CurrentReceiptHandle == receiptHandle)
            {
                _messages.Remove(message);
                _messagesById.Remove(messageId);
            }
        }
    }

    public void ChangeVisibility(string messageId, string receiptHandle, int visibilityTimeout, DateTimeOffset now)
    {
        lock (_sync)
        {
            if (!_messagesById.TryGetValue(messageId, out var message) || message.CurrentReceiptHandle != receiptHandle)
            {
                throw SqsErrors.InvalidParameterValue("ReceiptHandle", receiptHandle,
                    "Message does not exist or is not available for visibility timeout change.");
            }

            if (!message.WasReceived || message.VisibleAt <= now)
            {
                throw SqsErrors.MessageNotInflight();
            }

            var total = (now - message.InFlightSince).TotalSeconds + visibilityTimeout;
            if (total > SqsQueueSettings.MaxVisibilityTimeout)
            {
                throw SqsErrors.InvalidParameterValue("VisibilityTimeout", visibilityTimeout.ToString(CultureInfo.InvariantCulture),
                    $"Total VisibilityTimeout for the message is beyond the limit [{SqsQueueSettings.MaxVisibilityTimeout} seconds]");
            }

            message.VisibleAt = now + TimeSpan.FromSeconds(visibilityTimeout);
            if (visibilityTimeout == 0)
            {
                Signal();
            }
        }
    }

    /// <summary>
    /// Every in-flight message becomes visible now, as when its visibility timeout ends; delayed messages are left
    /// alone. Receipt handles are untouched: the current one stays the current one until the next receive.
    /// </summary>
    /// <returns>The number of messages made visible.</returns>
    public int ExpireVisibility(DateTimeOffset now)
    {
        lock (_sync)
        {
            var expired = 0;
            foreach (var message in _messages)
            {
                if (message.WasReceived && message.VisibleAt > now)
                {
                    message.VisibleAt = now;
                    expired++;
                }
            }

            if (expired > 0)
            {
                Signal();
            }

            return expired;
        }
    }

    public void Purge(DateTimeOffset now)
    {
        lock (_sync)
        {
            if (_lastPurgeAt is { } last && now - last < PurgeInterval)
            {
                throw SqsErrors.PurgeQueueInProgress(Arn);
            }

            _lastPurgeAt = now;
            _messages.Clear();
            _messagesById.Clear();
        }
    }

    public (int Visible, int NotVisible, int Delayed) Count(DateTimeOffset now)
    {
        lock (_sync)
        {
            RemoveExpired(now, _settings);
            int visible = 0, notVisible = 0, delayed = 0;
            foreach (var message in _messages)
            {
                if (message.VisibleAt <= now)
                {
                    visible++;
                }
                else if (message.WasReceived)
                {
                    notVisible++;
                }
                else
                {
                    delayed++;
                }
            }

            return (visible, notVisible, delayed);
        }
    }

    public void MarkDeleted()
    {
        lock (_sync)
        {
            IsDeleted = true;
            _messages.Clear();
            _messagesById.Clear();
            Signal();
        }
    }

    private void RemoveExpired(DateTimeOffset now, SqsQueueSettings settings)
    {
        var retention = TimeSpan.FromSeconds(settings.MessageRetentionPeriod);
        foreach (var expired in _messages.Where(message => now - message.SentAt >= retention).ToList())
        {
            _messages.Remove(expired);
            _messagesById.Remove(expired.MessageId);
        }
    }

    private static ReceivedMessage Snapshot(SqsMessage message)
    {
        var system = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["SenderId"] = message.SenderId,
            ["SentTimestamp"] = message.SentAt.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture),
            ["ApproximateReceiveCount"] = message.ReceiveCount.ToString(CultureInfo.InvariantCulture),
            ["ApproximateFirstReceiveTimestamp"] = message.FirstReceivedAt!.Value.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture),
        };
        if (message.AwsTraceHeader is not null)
        {
            system["AWSTraceHeader"] = message.AwsTraceHeader;
        }

        if (message.DeadLetterQueueSourceArn is not null)
        {
            system["DeadLetterQueueSourceArn"] = message.DeadLetterQueueSourceArn;
        }

        if (message.MessageGroupId is not null)
        {
            system["MessageGroupId"] = message.MessageGroupId;
        }

        if (message.MessageDeduplicationId is not null)
        {
            system["MessageDeduplicationId"] = message.MessageDeduplicationId;
        }

        if (message.SequenceNumber is not null)
        {
            system["SequenceNumber"] = message.SequenceNumber;
        }

        return new ReceivedMessage(message.MessageId, message.CurrentReceiptHandle!, message.Body, message.Attributes, system);
    }

    private void Signal()
    {
        var previous = _changed;
        _changed = NewSignal();
        previous.TrySetResult();
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}

/// <summary>
/// The result of one pass over a queue. <c>Changed</c> completes at the next change of the queue after this
/// pass, which is what a long poll waits for.
/// </summary>
internal sealed record ReceiveScan(
    IReadOnlyList<ReceivedMessage> Messages,
    IReadOnlyList<SqsMessage> DeadLetterMoves,
    SqsQueue? DeadLetterQueue,
    DateTimeOffset? NextVisibleAt,
    Task Changed);
