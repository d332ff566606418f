using Azure.Messaging.ServiceBus;

namespace Messaging.LocalServiceBus.Tests;

public sealed class QueueTests
{
    static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Sent_message_is_received_and_completed()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("orders", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("orders");
        await sender.SendMessageAsync(new ServiceBusMessage(BinaryData.FromString("hello"))
        {
            MessageId = "m-1",
            ContentType = "text/plain",
            CorrelationId = "c-1",
            Subject = "greeting",
        }, Ct);

        await using var receiver = bus.Client.CreateReceiver("orders");
        var received = await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct);

        Assert.NotNull(received);
        Assert.Equal("hello", received.Body.ToString());
        Assert.Equal("m-1", received.MessageId);
        Assert.Equal("text/plain", received.ContentType);
        Assert.Equal("c-1", received.CorrelationId);
        Assert.Equal("greeting", received.Subject);
        Assert.Equal(1, received.DeliveryCount);
        Assert.Equal(1, received.SequenceNumber);
        Assert.NotEqual(default, received.LockToken is null ? default : Guid.Parse(received.LockToken));
        Assert.True(received.LockedUntil > DateTimeOffset.UtcNow);
        await receiver.CompleteMessageAsync(received, Ct);

        var again = await receiver.ReceiveMessageAsync(TimeSpan.FromMilliseconds(500), Ct);
        Assert.Null(again);
    }
}
