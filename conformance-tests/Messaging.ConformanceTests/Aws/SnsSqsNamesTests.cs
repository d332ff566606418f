using Messaging.Aws;

namespace Messaging.ConformanceTests.Aws;

public sealed class SnsSqsNamesTests
{
    [Fact]
    public void Valid_names_are_used_unchanged()
    {
        Assert.Equal("orders-billing_v2", SnsSqsNames.Queue("orders-billing_v2"));
        Assert.Equal("orders-billing_v2-dead-letter", SnsSqsNames.DeadLetterQueue("orders-billing_v2"));
        Assert.Equal("orders", SnsSqsNames.Topic("orders"));
    }

    [Fact]
    public void Dots_are_replaced_and_a_hash_keeps_different_names_apart()
    {
        var dotted = SnsSqsNames.Queue("orders.billing");
        var underscored = SnsSqsNames.Queue("orders_billing");
        Assert.Matches("^orders_billing-[0-9a-f]{8}$", dotted);
        Assert.Equal("orders_billing", underscored);
        Assert.NotEqual(dotted, underscored);
        Assert.Equal("orders_billing-7d43a02c", dotted); // the README's example; the same in every process
    }

    [Fact]
    public void Long_names_are_cut_to_80_characters_for_queues_and_their_dead_letter_queues()
    {
        var name = "s" + new string('x', 150);
        var queue = SnsSqsNames.Queue(name);
        var deadLetter = SnsSqsNames.DeadLetterQueue(name);
        Assert.Equal(80, queue.Length);
        Assert.Equal(80, deadLetter.Length);
        Assert.EndsWith("-dead-letter", deadLetter, StringComparison.Ordinal);
        Assert.NotEqual(SnsSqsNames.Queue(name + "y"), queue);
        Assert.Matches("^[A-Za-z0-9_-]+$", queue);
        Assert.Matches("^[A-Za-z0-9_-]+$", deadLetter);
    }

    [Fact]
    public void Topics_keep_up_to_256_characters()
    {
        var name = "t" + new string('a', 199);
        Assert.Equal(name, SnsSqsNames.Topic(name));
        Assert.Matches("^t_a+-[0-9a-f]{8}$", SnsSqsNames.Topic("t." + new string('a', 100)));
    }
}
