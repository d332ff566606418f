using Azure.Messaging.ServiceBus;

namespace Messaging.LocalServiceBus.Tests;

public sealed class TopicTests
{
    static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Every_subscription_receives_its_own_copy()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateTopicAsync("events", cancellationToken: Ct);
        await bus.Endpoint.CreateSubscriptionAsync("events", "billing", cancellationToken: Ct);
        await bus.Endpoint.CreateSubscriptionAsync("events", "shipping", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("events");
        await sender.SendMessageAsync(new ServiceBusMessage("order placed") { MessageId = "evt-1" }, Ct);

        await using var billing = bus.Client.CreateReceiver("events", "billing");
        await using var shipping = bus.Client.CreateReceiver("events", "shipping");
        var billed = await billing.ReceiveMessageAsync(LocalBus.Patience, Ct);
        var shipped = await shipping.ReceiveMessageAsync(LocalBus.Patience, Ct);

        Assert.Equal("evt-1", billed?.MessageId);
        Assert.Equal("evt-1", shipped?.MessageId);
        await billing.CompleteMessageAsync(billed!, Ct);
        await shipping.AbandonMessageAsync(shipped!, cancellationToken: Ct);
        var again = await shipping.ReceiveMessageAsync(LocalBus.Patience, Ct);
        Assert.Equal(2, again?.DeliveryCount);
        Assert.Null(await billing.ReceiveMessageAsync(TimeSpan.FromMilliseconds(300), Ct));
    }

    [Fact]
    public async Task Subscription_dead_letter_queue_is_reachable()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateTopicAsync("alerts", cancellationToken: Ct);
        await bus.Endpoint.CreateSubscriptionAsync("alerts", "pager", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("alerts");
        await sender.SendMessageAsync(new ServiceBusMessage("disk full"), Ct);
        await using var receiver = bus.Client.CreateReceiver("alerts", "pager");
        var message = await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct);
        await receiver.DeadLetterMessageAsync(message!, "Unroutable", "no on-call engineer", Ct);

        await using var deadLetters = bus.Client.CreateReceiver("alerts", "pager", new ServiceBusReceiverOptions { SubQueue = SubQueue.DeadLetter });
        var dead = await deadLetters.ReceiveMessageAsync(LocalBus.Patience, Ct);

        Assert.Equal("disk full", dead?.Body.ToString());
        Assert.Equal("Unroutable", dead?.DeadLetterReason);
        Assert.Equal("no on-call engineer", dead?.DeadLetterErrorDescription);
    }

    [Fact]
    public async Task Message_scheduled_on_a_topic_fans_out_at_its_time()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateTopicAsync("reminders", cancellationToken: Ct);
        await bus.Endpoint.CreateSubscriptionAsync("reminders", "a", cancellationToken: Ct);
        await bus.Endpoint.CreateSubscriptionAsync("reminders", "b", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("reminders");
        var at = DateTimeOffset.UtcNow.AddSeconds(1);
        await sender.ScheduleMessageAsync(new ServiceBusMessage("ping"), at, Ct);

        await using var a = bus.Client.CreateReceiver("reminders", "a");
        await using var b = bus.Client.CreateReceiver("reminders", "b");
        var fromA = await a.ReceiveMessageAsync(LocalBus.Patience, Ct);
        var fromB = await b.ReceiveMessageAsync(LocalBus.Patience, Ct);

        Assert.Equal("ping", fromA?.Body.ToString());
        Assert.Equal("ping", fromB?.Body.ToString());
        Assert.True(DateTimeOffset.UtcNow >= DateTimeOffset.FromUnixTimeMilliseconds(at.ToUnixTimeMilliseconds()), "fanned out before its scheduled time");
    }
}
