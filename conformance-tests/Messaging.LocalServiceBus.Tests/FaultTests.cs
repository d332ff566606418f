using System.Collections.Concurrent;
using Azure.Messaging.ServiceBus;

namespace Messaging.LocalServiceBus.Tests;

/// <summary>The injected broker faults: forced detach of receiver links, locks expired at once, and throttled sends.</summary>
public sealed class FaultTests
{
    static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Detached_receivers_lose_their_links_and_an_unsettled_message_comes_back_when_its_lock_expires()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("detached", new LocalQueueOptions { LockDuration = TimeSpan.FromSeconds(5) }, Ct);
        await bus.Endpoint.CreateQueueAsync("bystander", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("detached");
        await sender.SendMessageAsync(new ServiceBusMessage("held"), Ct);
        await sender.SendMessageAsync(new ServiceBusMessage("settled late"), Ct);
        await using var receiver = bus.Client.CreateReceiver("detached");
        await using var deadLetters = bus.Client.CreateReceiver("detached", new ServiceBusReceiverOptions { SubQueue = SubQueue.DeadLetter });
        await using var bystander = bus.Client.CreateReceiver("bystander");

        // An empty receive leaves each link attached.
        Assert.Null(await deadLetters.ReceiveMessageAsync(TimeSpan.FromMilliseconds(200), Ct));
        Assert.Null(await bystander.ReceiveMessageAsync(TimeSpan.FromMilliseconds(200), Ct));
        var received = await QueueTests.ReceiveAtLeastAsync(receiver, 2);
        Assert.Equal(["held", "settled late"], received.Select(m => m.Body.ToString()));
        Assert.All(received, m => Assert.Equal(1, m.DeliveryCount));

        // The path as a receiver names it, in any casing; the dead-letter sub-queue is a source of its own.
        Assert.Equal(1, bus.Endpoint.DetachReceivers("DETACHED"));
        Assert.Equal(0, bus.Endpoint.DetachReceivers("detached"));
        Assert.Equal(1, bus.Endpoint.DetachReceivers("detached/$deadletterqueue"));
        Assert.Throws<InvalidOperationException>(() => bus.Endpoint.DetachReceivers("missing"));

        // As on Service Bus the locks outlive the link: once the client has seen the detach, the SDK settles a message whose
        // link is gone over $management, which works while the lock lasts. (A settlement racing the detach fails as MessageLockLost.)
        await WaitUntilAsync(() => bus.Endpoint.AttachedReceivers("detached") == 0);
        await receiver.CompleteMessageAsync(received[1], Ct);

        // The message left unsettled comes back once its lock has expired, counted as delivered twice. A receive can end
        // empty while the SDK attaches again, so it is asked again, within a bound.
        ServiceBusReceivedMessage? again = null;
        var deadline = DateTime.UtcNow + LocalBus.Patience;
        while (again is null && DateTime.UtcNow < deadline)
        {
            again = await receiver.ReceiveMessageAsync(TimeSpan.FromSeconds(1), Ct);
        }

        Assert.NotNull(again);
        Assert.Equal("held", again.Body.ToString());
        Assert.Equal(received[0].SequenceNumber, again.SequenceNumber);
        Assert.Equal(2, again.DeliveryCount);
        await receiver.CompleteMessageAsync(again, Ct);
        Assert.Null(await receiver.ReceiveMessageAsync(TimeSpan.FromSeconds(1), Ct));

        // Receivers of other entities were left alone.
        await using var other = bus.Client.CreateSender("bystander");
        await other.SendMessageAsync(new ServiceBusMessage("undisturbed"), Ct);
        Assert.Equal("undisturbed", (await bystander.ReceiveMessageAsync(LocalBus.Patience, Ct))?.Body.ToString());
    }

    [Fact]
    public async Task A_processor_on_a_subscription_keeps_receiving_after_its_link_is_detached()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateTopicAsync("events", cancellationToken: Ct);
        await bus.Endpoint.CreateSubscriptionAsync("events", "billing", cancellationToken: Ct);
        var seen = new ConcurrentQueue<string>();
        var errors = new ConcurrentQueue<Exception>();
        await using var processor = bus.Client.CreateProcessor("events", "billing", new ServiceBusProcessorOptions { AutoCompleteMessages = false, MaxConcurrentCalls = 1 });
        processor.ProcessMessageAsync += async args =>
        {
            await args.CompleteMessageAsync(args.Message, args.CancellationToken);
            seen.Enqueue(args.Message.Body.ToString());
        };
        processor.ProcessErrorAsync += args =>
        {
            errors.Enqueue(args.Exception);
            return Task.CompletedTask;
        };
        await processor.StartProcessingAsync(Ct);
        await using var sender = bus.Client.CreateSender("events");
        await sender.SendMessageAsync(new ServiceBusMessage("before"), Ct);
        await WaitUntilAsync(() => seen.Contains("before"));

        Assert.Equal(1, bus.Endpoint.DetachReceivers("Events/subscriptions/BILLING"));
        await sender.SendMessageAsync(new ServiceBusMessage("after"), Ct);

        await WaitUntilAsync(() => seen.Contains("after"));
        await processor.StopProcessingAsync(Ct);
        Assert.Equal(["before", "after"], seen);
    }

    [Fact]
    public async Task Refused_sends_fail_as_ServiceBusy_and_store_nothing_until_disposed()
    {
        await using var bus = await LocalBus.StartAsync(options => options.RetryOptions.MaxRetries = 0);
        await bus.Endpoint.CreateQueueAsync("throttled", cancellationToken: Ct);
        await bus.Endpoint.CreateQueueAsync("open", cancellationToken: Ct);

        using (bus.Endpoint.RefuseSends("Throttled"))
        {
            // Each call gets its own sender: after a ServiceBusy failure the SDK holds back that sender's next operation for 10 s.
            await using (var sender = bus.Client.CreateSender("throttled"))
            {
                var busy = await Assert.ThrowsAsync<ServiceBusException>(() => sender.SendMessageAsync(new ServiceBusMessage("refused"), Ct));
                Assert.Equal(ServiceBusFailureReason.ServiceBusy, busy.Reason);
                Assert.Contains("Error code : 50009", busy.Message, StringComparison.Ordinal);
            }

            await using (var sender = bus.Client.CreateSender("throttled"))
            {
                using var batch = await sender.CreateMessageBatchAsync(Ct);
                Assert.True(batch.TryAddMessage(new ServiceBusMessage("refused batch")));
                var busy = await Assert.ThrowsAsync<ServiceBusException>(() => sender.SendMessagesAsync(batch, Ct));
                Assert.Equal(ServiceBusFailureReason.ServiceBusy, busy.Reason);
            }

            await using (var sender = bus.Client.CreateSender("throttled"))
            {
                var busy = await Assert.ThrowsAsync<ServiceBusException>(
                    () => sender.ScheduleMessageAsync(new ServiceBusMessage("refused schedule"), DateTimeOffset.UtcNow.AddSeconds(1), Ct));
                Assert.Equal(ServiceBusFailureReason.ServiceBusy, busy.Reason);
            }

            // Another entity is not throttled.
            await using var open = bus.Client.CreateSender("open");
            await open.SendMessageAsync(new ServiceBusMessage("through"), Ct);
        }

        await using var after = bus.Client.CreateSender("throttled");
        await after.SendMessageAsync(new ServiceBusMessage("accepted"), Ct);
        await using var receiver = bus.Client.CreateReceiver("throttled", new ServiceBusReceiverOptions { ReceiveMode = ServiceBusReceiveMode.ReceiveAndDelete });
        Assert.Equal("accepted", (await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct))?.Body.ToString());
        Assert.Null(await receiver.ReceiveMessageAsync(TimeSpan.FromSeconds(2), Ct));
        await using var openReceiver = bus.Client.CreateReceiver("open", new ServiceBusReceiverOptions { ReceiveMode = ServiceBusReceiveMode.ReceiveAndDelete });
        Assert.Equal("through", (await openReceiver.ReceiveMessageAsync(LocalBus.Patience, Ct))?.Body.ToString());
    }

    [Fact]
    public async Task Refusing_every_entity_throttles_a_sender_that_is_already_attached()
    {
        await using var bus = await LocalBus.StartAsync(options => options.RetryOptions.MaxRetries = 0);
        await bus.Endpoint.CreateTopicAsync("news", cancellationToken: Ct);
        await bus.Endpoint.CreateSubscriptionAsync("news", "reader", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("news");
        await sender.SendMessageAsync(new ServiceBusMessage("first"), Ct);

        var refusal = bus.Endpoint.RefuseSends();
        var busy = await Assert.ThrowsAsync<ServiceBusException>(() => sender.SendMessageAsync(new ServiceBusMessage("refused"), Ct));
        Assert.Equal(ServiceBusFailureReason.ServiceBusy, busy.Reason);
        refusal.Dispose();
        refusal.Dispose();

        await using var fresh = bus.Client.CreateSender("news");
        await fresh.SendMessageAsync(new ServiceBusMessage("second"), Ct);
        await using var receiver = bus.Client.CreateReceiver("news", "reader", new ServiceBusReceiverOptions { ReceiveMode = ServiceBusReceiveMode.ReceiveAndDelete });
        var received = await QueueTests.ReceiveAtLeastAsync(receiver, 2);
        Assert.Equal(["first", "second"], received.Select(m => m.Body.ToString()));
        Assert.Null(await receiver.ReceiveMessageAsync(TimeSpan.FromSeconds(1), Ct));
    }

    [Fact]
    public async Task Expired_locks_are_lost_at_once_and_the_message_comes_back_delivered_once_more()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("leased", new LocalQueueOptions { LockDuration = TimeSpan.FromMinutes(5) }, Ct);
        await using var sender = bus.Client.CreateSender("leased");
        await sender.SendMessageAsync(new ServiceBusMessage("held"), Ct);
        await using var receiver = bus.Client.CreateReceiver("leased");
        var first = await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct);
        Assert.NotNull(first);
        Assert.Equal(1, first.DeliveryCount);

        // Any casing names the queue; an unknown entity is refused.
        Assert.Equal(1, bus.Endpoint.ExpireLocks("LEASED"));
        Assert.Throws<InvalidOperationException>(() => bus.Endpoint.ExpireLocks("missing"));

        // The old lock token is lost, over $management (renew) and on the receive link (complete) alike.
        var renew = await Assert.ThrowsAsync<ServiceBusException>(() => receiver.RenewMessageLockAsync(first, Ct));
        Assert.Equal(ServiceBusFailureReason.MessageLockLost, renew.Reason);
        var complete = await Assert.ThrowsAsync<ServiceBusException>(() => receiver.CompleteMessageAsync(first, Ct));
        Assert.Equal(ServiceBusFailureReason.MessageLockLost, complete.Reason);

        // The message was not completed: it comes back at once (well before its five-minute lock would have ended),
        // counted as delivered twice, with a new lock token that settles.
        var again = await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct);
        Assert.NotNull(again);
        Assert.Equal("held", again.Body.ToString());
        Assert.Equal(first.SequenceNumber, again.SequenceNumber);
        Assert.Equal(2, again.DeliveryCount);
        Assert.NotEqual(first.LockToken, again.LockToken);
        await receiver.CompleteMessageAsync(again, Ct);
        Assert.Null(await receiver.ReceiveMessageAsync(TimeSpan.FromSeconds(1), Ct));
    }

    [Fact]
    public async Task Expiring_the_last_allowed_lock_of_a_subscription_dead_letters_the_message_as_lock_expiry_does()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateTopicAsync("events", cancellationToken: Ct);
        await bus.Endpoint.CreateSubscriptionAsync("events", "billing", new LocalSubscriptionOptions { MaxDeliveryCount = 1, LockDuration = TimeSpan.FromMinutes(5) }, Ct);
        await bus.Endpoint.CreateSubscriptionAsync("events", "audit", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("events");
        await sender.SendMessagesAsync([new ServiceBusMessage("first"), new ServiceBusMessage("second")], Ct);
        await using var receiver = bus.Client.CreateReceiver("events", "billing");
        var received = await QueueTests.ReceiveAtLeastAsync(receiver, 2);

        // Only the locks of the named subscription expire; another subscription holds none.
        Assert.Equal(0, bus.Endpoint.ExpireLocks("events/Subscriptions/audit"));
        Assert.Equal(2, bus.Endpoint.ExpireLocks("Events/subscriptions/BILLING"));

        var abandon = await Assert.ThrowsAsync<ServiceBusException>(() => receiver.AbandonMessageAsync(received[0], cancellationToken: Ct));
        Assert.Equal(ServiceBusFailureReason.MessageLockLost, abandon.Reason);
        var deadLetter = await Assert.ThrowsAsync<ServiceBusException>(() => receiver.DeadLetterMessageAsync(received[1], "late", cancellationToken: Ct));
        Assert.Equal(ServiceBusFailureReason.MessageLockLost, deadLetter.Reason);

        // Their one delivery used up, both moved to the dead-letter sub-queue, as when a lock runs out.
        await using var deadLetters = bus.Client.CreateReceiver("events", "billing", new ServiceBusReceiverOptions { SubQueue = SubQueue.DeadLetter });
        var dead = await QueueTests.ReceiveAtLeastAsync(deadLetters, 2);
        Assert.Equal(["first", "second"], dead.Select(m => m.Body.ToString()));
        Assert.All(dead, m => Assert.Equal("MaxDeliveryCountExceeded", m.DeadLetterReason));
        Assert.Null(await receiver.ReceiveMessageAsync(TimeSpan.FromSeconds(1), Ct));
    }

    static async Task WaitUntilAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + LocalBus.Patience;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met in time");
            await Task.Delay(50, Ct);
        }
    }
}
