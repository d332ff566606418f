using System.Collections.Concurrent;
using System.Threading.Channels;

namespace Messaging.InMemory;

/// <summary>
/// The state of the in-memory "broker": topics and one bounded queue per subscription. Share one instance
/// between several hosts in a process to get competing consumers, exactly as with a real broker.
/// </summary>
public sealed class InMemoryBroker
{
    private readonly ConcurrentDictionary<string, ConcurrentDictionary<string, InMemoryQueue>> _topics = new(StringComparer.Ordinal);
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

    internal void DeclareTopic(string topic) => _topics.GetOrAdd(topic, _ => new(StringComparer.Ordinal));

    internal InMemoryQueue DeclareSubscription(string topic, string subscription)
    {
        var queue = _queues.GetOrAdd(subscription, name => new InMemoryQueue(name, Options.QueueCapacity));
        _topics.GetOrAdd(topic, _ => new(StringComparer.Ordinal)).TryAdd(subscription, queue);
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
    public async Task PublishRawAsync(string topic, IReadOnlyDictionary<string, string> properties, ReadOnlyMemory<byte> body, string? contentType, CancellationToken cancellationToken)
    {
        if (!_topics.TryGetValue(topic, out var subscriptions))
        {
            throw new InvalidOperationException($"Topic '{topic}' does not exist on the in-memory broker. Declare it (AddTopic, MapEvent or a subscription) and keep Messaging:Provisioning on.");
        }
        await WhileBlockedAsync(cancellationToken).ConfigureAwait(false);
        foreach (var queue in subscriptions.Values)
        {
            await queue.PublishAsync(new InMemoryMessage(properties, body, contentType), cancellationToken).ConfigureAwait(false);
        }
    }
}

/// <summary>
/// One subscription's queue. Publishers wait while <c>QueueCapacity</c> published messages are waiting; messages coming
/// back (a retry, a return, a stopped consumer's) never wait and are never dropped, so a full queue cannot stall or lose them.
/// </summary>
internal sealed class InMemoryQueue(string name, int capacity)
{
    private readonly Channel<InMemoryMessage> _ready = Channel.CreateUnbounded<InMemoryMessage>(new UnboundedChannelOptions
    {
        SingleReader = false,
        SingleWriter = false,
    });

    private readonly SemaphoreSlim _room = new(capacity, capacity);

    public string Name { get; } = name;

    public Lock DeadLetterLock { get; } = new();

    /// <summary>Messages ready for delivery: published or put back, and not yet taken by a receiver.</summary>
    public int ReadyCount => _ready.Reader.Count;

    public List<InMemoryMessage> DeadLetters { get; } = [];

    /// <summary>Adds a newly published (or replayed) message, waiting while the queue is full.</summary>
    public async ValueTask PublishAsync(InMemoryMessage message, CancellationToken cancellationToken)
    {
        await _room.WaitAsync(cancellationToken).ConfigureAwait(false);
        message.HoldsRoom = true;
        if (!_ready.Writer.TryWrite(message))
        {
            message.HoldsRoom = false;
            _room.Release();
        }
    }

    /// <summary>Puts a message back without waiting: it already had its place in the queue.</summary>
    public void Redeliver(InMemoryMessage message) => _ready.Writer.TryWrite(message);

    public ValueTask<bool> WaitToReadAsync(CancellationToken cancellationToken) => _ready.Reader.WaitToReadAsync(cancellationToken);

    public bool TryRead(out InMemoryMessage message)
    {
        if (!_ready.Reader.TryRead(out message!))
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
}
