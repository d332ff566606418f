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

    public InMemoryBroker(InMemoryTransportOptions? options = null)
    {
        Options = options ?? new InMemoryTransportOptions();
    }

    public InMemoryTransportOptions Options { get; }

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
        foreach (var queue in subscriptions.Values)
        {
            await queue.Ready.Writer.WriteAsync(new InMemoryMessage(properties, body, contentType), cancellationToken).ConfigureAwait(false);
        }
    }
}

internal sealed class InMemoryQueue(string name, int capacity)
{
    public string Name { get; } = name;

    public Channel<InMemoryMessage> Ready { get; } = Channel.CreateBounded<InMemoryMessage>(new BoundedChannelOptions(capacity)
    {
        FullMode = BoundedChannelFullMode.Wait,
        SingleReader = false,
        SingleWriter = false,
    });

    public Lock DeadLetterLock { get; } = new();

    public List<InMemoryMessage> DeadLetters { get; } = [];
}
