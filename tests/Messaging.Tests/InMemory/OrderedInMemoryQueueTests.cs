using Messaging.InMemory;
using Messaging.Tests.Infrastructure;

namespace Messaging.Tests.InMemory;

/// <summary>
/// An ordered in-memory queue hands out messages like an SQS FIFO queue its message groups: per key in publish order, one
/// message of a key out at a time, a message that comes back at the head of its key; keys independent; keyless messages free.
/// </summary>
public sealed class OrderedInMemoryQueueTests
{
    private readonly InMemoryQueue _queue = new("sub", capacity: 100, ordered: true);

    private static InMemoryMessage Message(string id, string? key) =>
        new(key is null ? new Dictionary<string, string> { ["id"] = id } : new Dictionary<string, string> { ["id"] = id, ["partitionkey"] = key }, ReadOnlyMemory<byte>.Empty, null);

    private async Task PublishAsync(params InMemoryMessage[] messages)
    {
        foreach (var message in messages)
        {
            await _queue.PublishAsync(message, Wait.TestToken);
        }
    }

    private List<string> TakeAll()
    {
        var taken = new List<string>();
        while (_queue.TryRead(out var message))
        {
            taken.Add(message.Properties["id"]);
        }
        return taken;
    }

    [Fact]
    public async Task One_message_per_key_is_out_at_a_time_and_keys_and_keyless_messages_are_independent()
    {
        await PublishAsync(Message("a1", "A"), Message("a2", "A"), Message("b1", "B"), Message("n1", null), Message("n2", null));

        Assert.Equal(["a1", "b1", "n1", "n2"], TakeAll());
        Assert.Equal(1, _queue.ReadyCount); // a2 waits behind a1
    }

    [Fact]
    public async Task Settling_a_message_frees_its_key_for_the_next_one_in_publish_order()
    {
        var a1 = Message("a1", "A");
        await PublishAsync(a1, Message("a2", "A"), Message("a3", "A"));
        Assert.Equal(["a1"], TakeAll());

        _queue.Settled(a1);

        Assert.Equal(["a2"], TakeAll());
    }

    [Fact]
    public async Task A_message_that_comes_back_goes_to_the_head_of_its_key()
    {
        var a1 = Message("a1", "A");
        await PublishAsync(a1, Message("a2", "A"));
        Assert.Equal(["a1"], TakeAll());

        _queue.Redeliver(a1);

        Assert.Equal(["a1"], TakeAll());
        Assert.Equal(1, _queue.ReadyCount);
    }

    [Fact]
    public async Task A_reader_waiting_on_a_busy_key_wakes_when_the_key_is_freed()
    {
        var a1 = Message("a1", "A");
        await PublishAsync(a1, Message("a2", "A"));
        Assert.Equal(["a1"], TakeAll());
        var waiting = _queue.WaitToReadAsync(Wait.TestToken).AsTask();
        Assert.False(waiting.IsCompleted);

        _queue.Settled(a1);

        Assert.True(await Wait.ForAsync(waiting, "the waiting reader to wake"));
        Assert.Equal(["a2"], TakeAll());
    }

    [Fact]
    public void An_ordered_and_an_unordered_subscription_cannot_share_a_name()
    {
        var broker = new InMemoryBroker();
        broker.DeclareSubscription("topic", "sub", ordered: true);

        var error = Assert.Throws<InvalidOperationException>(() => broker.DeclareSubscription("topic", "sub", ordered: false));
        Assert.Contains("ordering", error.Message, StringComparison.Ordinal);
    }
}
