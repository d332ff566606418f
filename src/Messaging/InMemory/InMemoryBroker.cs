using System.Collections.Concurrent;
using System.Threading.Channels;

namespace Messaging.InMemory;

/// <summary>
/// The state of the in-memory "broker": topics and one bounded queue per subscription. Share one instance
/// between several hosts in a process to get competing consumers, exactly as with a real broker.
/// </summary>
public sealed class InMemoryBroker
{
    private readonly ConcurrentDictionary<string, TopicQueues> _topics = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, InMemoryQueue> _queues = new(StringComparer.Ordinal);

    /// <summary>Creates an empty broker: no topics, no subscriptions.</summary>
    /// <param name="options">Queue capacity, event size limit and crash delivery limit; the defaults when null.</param>
    public InMemoryBroker(InMemoryTransportOptions? options = null)
    {
        Options = options ?? new InMemoryTransportOptions();
    }

    /// <summary>The settings every queue of this broker uses.</summary>
    public InMemoryTransportOptions Options { get; }

    private readonly Lock _blockLock = new();
    private TaskCompletionSource? _unblocked;

    /// <summary>
    /// Blocks every publisher until the returned handle is disposed, as RabbitMQ blocks publishing connections under a memory
    /// or disk alarm: publishes wait (and fail once <c>Messaging:PublishTimeout</c> has passed); consumers go on. For tests
    /// of how a service behaves while its broker holds publishes.
    /// </summary>
    public IDisposable BlockPublishers()
    {
        lock (_blockLock)
        {
            _unblocked ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }
        return new Unblock(this);
    }

    private sealed class Unblock(InMemoryBroker broker) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                TaskCompletionSource? released;
                lock (broker._blockLock)
                {
                    released = broker._unblocked;
                    broker._unblocked = null;
                }
                released?.TrySetResult();
            }
        }
    }

    private Task WhileBlockedAsync(CancellationToken cancellationToken)
    {
        var unblocked = Volatile.Read(ref _unblocked);
        return unblocked is null ? Task.CompletedTask : unblocked.Task.WaitAsync(cancellationToken);
    }

    internal void DeclareTopic(string topic) => _topics.GetOrAdd(topic, _ => new());

    internal InMemoryQueue DeclareSubscription(string topic, string subscription, bool ordered = false)
    {
        var queue = _queues.GetOrAdd(subscription, name => new InMemoryQueue(name, Options.QueueCapacity, ordered));
        if (queue.Ordered != ordered)
        {
            throw new InvalidOperationException(
                $"In-memory subscription '{subscription}' already exists {(queue.Ordered ? "with" : "without")} ordering; an ordered and an unordered subscription cannot share a name.");
        }
        _topics.GetOrAdd(topic, _ => new()).Add(queue);
        return queue;
    }

    internal InMemoryQueue GetQueue(string subscription) =>
        _queues.TryGetValue(subscription, out var queue)
            ? queue
            : throw new InvalidOperationException($"Subscription '{subscription}' does not exist on the in-memory broker. Provision it first (Messaging:Provisioning).");

    /// <summary>
    /// Puts a raw message on every subscription of a topic, bypassing the CloudEvents encoder. Tests use it
    /// to deliver what a foreign or broken producer would send.
    /// </summary>
    public Task PublishRawAsync(string topic, IReadOnlyDictionary<string, string> properties, ReadOnlyMemory<byte> body, string? contentType, CancellationToken cancellationToken) =>
        PublishAsync(topic, new InMemoryMessage(properties, body, contentType), cancellationToken);

    /// <summary>Puts a stored message on every subscription of a topic, a copy of its own (ids and delivery counts) for each.</summary>
    internal async Task PublishAsync(string topic, InMemoryMessage message, CancellationToken cancellationToken)
    {
        if (!_topics.TryGetValue(topic, out var subscriptions))
        {
            throw new InvalidOperationException($"Topic '{topic}' does not exist on the in-memory broker. Declare it (AddTopic, MapEvent or a subscription) and keep Messaging:Provisioning on.");
        }
        await WhileBlockedAsync(cancellationToken).ConfigureAwait(false);
        var queues = subscriptions.Queues;
        for (var i = 0; i < queues.Length; i++)
        {
            await queues[i].PublishAsync(i == 0 ? message : message.Copy(), cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// A topic's subscription queues. Read on every publish without a lock or an allocation (an array, replaced whole when a
    /// subscription is declared); declarations are rare.
    /// </summary>
    private sealed class TopicQueues
    {
        private readonly Lock _lock = new();
        private InMemoryQueue[] _queues = [];

        public InMemoryQueue[] Queues => Volatile.Read(ref _queues);

        public void Add(InMemoryQueue queue)
        {
            lock (_lock)
            {
                if (Array.IndexOf(_queues, queue) < 0)
                {
                    Volatile.Write(ref _queues, [.. _queues, queue]);
                }
            }
        }
    }
}

/// <summary>
/// One subscription's queue. Publishers wait while <c>QueueCapacity</c> published messages are waiting; messages coming
/// back (a retry, a return, a stopped consumer's) never wait and are never dropped, so a full queue cannot stall or lose them.
/// An ordered queue hands out messages like an SQS FIFO queue its message groups: per ordering key in publish order, and
/// no message of a key while an earlier one of that key is out (received and not yet settled, or waiting for its retry);
/// a message that comes back goes back to the head of its key. Keys are independent, and messages without a key are
/// handed out as they come.
/// </summary>
internal sealed class InMemoryQueue(string name, int capacity, bool ordered = false)
{
    private readonly Channel<InMemoryMessage> _ready = Channel.CreateUnbounded<InMemoryMessage>(new UnboundedChannelOptions
    {
        SingleReader = false,
        SingleWriter = false,
    });

    private readonly SemaphoreSlim _room = new(capacity, capacity);
    private readonly KeyedMessages? _keyed = ordered ? new KeyedMessages() : null;

    public string Name { get; } = name;

    /// <summary>True for the queue of an ordered subscription.</summary>
    public bool Ordered => _keyed is not null;

    public Lock DeadLetterLock { get; } = new();

    /// <summary>Messages ready for delivery: published or put back, and not yet taken by a receiver.</summary>
    public int ReadyCount => _keyed?.Count ?? _ready.Reader.Count;

    public List<InMemoryMessage> DeadLetters { get; } = [];

    /// <summary>Adds a newly published (or replayed) message, waiting while the queue is full.</summary>
    public async ValueTask PublishAsync(InMemoryMessage message, CancellationToken cancellationToken)
    {
        await _room.WaitAsync(cancellationToken).ConfigureAwait(false);
        message.HoldsRoom = true;
        if (_keyed is not null)
        {
            _keyed.Add(message);
        }
        else if (!_ready.Writer.TryWrite(message))
        {
            message.HoldsRoom = false;
            _room.Release();
        }
    }

    /// <summary>
    /// Puts a message back without waiting: it already had its place in the queue. In an ordered queue it goes back to
    /// the head of its key, which is free again.
    /// </summary>
    public void Redeliver(InMemoryMessage message)
    {
        if (_keyed is not null)
        {
            _keyed.PutBack(message);
        }
        else
        {
            _ready.Writer.TryWrite(message);
        }
    }

    /// <summary>An ordered queue's message was settled for good (completed or dead-lettered): its key is free again.</summary>
    public void Settled(InMemoryMessage message) => _keyed?.Release(message);

    public ValueTask<bool> WaitToReadAsync(CancellationToken cancellationToken) =>
        _keyed is not null ? _keyed.WaitToReadAsync(cancellationToken) : _ready.Reader.WaitToReadAsync(cancellationToken);

    public bool TryRead(out InMemoryMessage message)
    {
        if (_keyed is not null ? !_keyed.TryTake(out message!) : !_ready.Reader.TryRead(out message!))
        {
            return false;
        }
        if (message.HoldsRoom)
        {
            message.HoldsRoom = false;
            _room.Release();
        }
        return true;
    }

    /// <summary>The messages of an ordered queue: one list per key, the keys free to hand out, and the keyless ones.</summary>
    private sealed class KeyedMessages
    {
        private readonly Lock _lock = new();
        private readonly Dictionary<string, LinkedList<InMemoryMessage>> _byKey = new(StringComparer.Ordinal);
        private readonly HashSet<string> _out = new(StringComparer.Ordinal);
        private readonly Queue<string> _free = new();
        private readonly Queue<InMemoryMessage> _keyless = new();
        private TaskCompletionSource _changed = NewSignal();
        private int _count;

        public int Count => Volatile.Read(ref _count);

        /// <summary>A published message: at the tail of its key.</summary>
        public void Add(InMemoryMessage message) => Insert(message, comingBack: false);

        /// <summary>A message coming back (a retry, a return): at the head of its key, which is free again.</summary>
        public void PutBack(InMemoryMessage message) => Insert(message, comingBack: true);

        private void Insert(InMemoryMessage message, bool comingBack)
        {
            TaskCompletionSource signal;
            lock (_lock)
            {
                if (message.OrderingKey is not { } key)
                {
                    _keyless.Enqueue(message);
                }
                else
                {
                    if (!_byKey.TryGetValue(key, out var messages))
                    {
                        _byKey[key] = messages = new LinkedList<InMemoryMessage>();
                    }
                    if (comingBack)
                    {
                        messages.AddFirst(message);
                    }
                    else
                    {
                        messages.AddLast(message);
                    }
                    // A key is free when it has messages and none is out; it is listed once.
                    var wasOut = comingBack && _out.Remove(key);
                    if (wasOut || (messages.Count == 1 && !_out.Contains(key)))
                    {
                        _free.Enqueue(key);
                    }
                }
                _count++;
                signal = Signal();
            }
            signal.TrySetResult();
        }

        public void Release(InMemoryMessage message)
        {
            if (message.OrderingKey is not { } key)
            {
                return;
            }
            TaskCompletionSource? signal = null;
            lock (_lock)
            {
                if (_out.Remove(key) && _byKey.ContainsKey(key))
                {
                    _free.Enqueue(key);
                    signal = Signal();
                }
            }
            signal?.TrySetResult();
        }

        public bool TryTake(out InMemoryMessage message)
        {
            lock (_lock)
            {
                if (_free.TryDequeue(out var key))
                {
                    var messages = _byKey[key];
                    message = messages.First!.Value;
                    messages.RemoveFirst();
                    if (messages.Count == 0)
                    {
                        _byKey.Remove(key);
                    }
                    _out.Add(key);
                    _count--;
                    return true;
                }
                if (_keyless.TryDequeue(out message!))
                {
                    _count--;
                    return true;
                }
                return false;
            }
        }

        public async ValueTask<bool> WaitToReadAsync(CancellationToken cancellationToken)
        {
            while (true)
            {
                Task changed;
                lock (_lock)
                {
                    if (_free.Count > 0 || _keyless.Count > 0)
                    {
                        return true;
                    }
                    changed = _changed.Task;
                }
                await changed.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
        }

        /// <summary>Swaps the signal under the lock; the caller completes the old one after leaving it.</summary>
        private TaskCompletionSource Signal()
        {
            var signal = _changed;
            _changed = NewSignal();
            return signal;
        }

        private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
