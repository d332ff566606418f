using Azure.Messaging.ServiceBus;

namespace Messaging.LocalServiceBus.Tests;

public sealed class QueueTests
{
    static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>A lock short enough for a test to watch it expire, long enough that a stalled thread pool does not lose it early.</summary>
    static readonly TimeSpan ExpiringLock = TimeSpan.FromSeconds(8);

    [Fact]
    public async Task Sent_message_is_received_with_its_properties_and_completed()
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
            ReplyTo = "replies",
            To = "someone",
        }, Ct);

        await using var receiver = bus.Client.CreateReceiver("orders");
        var received = await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct);

        Assert.NotNull(received);
        Assert.Equal("hello", received.Body.ToString());
        Assert.Equal("m-1", received.MessageId);
        Assert.Equal("text/plain", received.ContentType);
        Assert.Equal("c-1", received.CorrelationId);
        Assert.Equal("greeting", received.Subject);
        Assert.Equal("replies", received.ReplyTo);
        Assert.Equal("someone", received.To);
        Assert.Equal(1, received.DeliveryCount);
        Assert.Equal(1, received.SequenceNumber);
        Assert.NotEqual(Guid.Empty, Guid.Parse(received.LockToken));
        Assert.True(received.LockedUntil > DateTimeOffset.UtcNow);
        Assert.True(received.EnqueuedTime > DateTimeOffset.UtcNow.AddMinutes(-1));
        Assert.Equal(TimeSpan.MaxValue, received.TimeToLive);
        await receiver.CompleteMessageAsync(received, Ct);

        Assert.Null(await receiver.ReceiveMessageAsync(TimeSpan.FromMilliseconds(500), Ct));
    }

    [Fact]
    public async Task Sequence_numbers_grow_per_entity_and_order_is_kept()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("ordered", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("ordered");
        for (int i = 0; i < 5; i++)
        {
            await sender.SendMessageAsync(new ServiceBusMessage($"m{i}"), Ct);
        }

        await using var receiver = bus.Client.CreateReceiver("ordered", new ServiceBusReceiverOptions { ReceiveMode = ServiceBusReceiveMode.ReceiveAndDelete });
        var received = await ReceiveAtLeastAsync(receiver, 5);

        Assert.Equal(["m0", "m1", "m2", "m3", "m4"], received.Select(m => m.Body.ToString()));
        Assert.Equal([1L, 2, 3, 4, 5], received.Select(m => m.SequenceNumber));
    }

    [Fact]
    public async Task A_receiver_gets_no_more_messages_than_its_link_credit()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("credit", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("credit");
        await sender.SendMessagesAsync(Enumerable.Range(0, 5).Select(i => new ServiceBusMessage($"m{i}")), Ct);

        // Without prefetch, a receive call grants exactly the credit it asks for: two messages go to the first receiver
        // (the SDK may hand them over in two calls), the other three stay available for the second.
        await using var first = bus.Client.CreateReceiver("credit", new ServiceBusReceiverOptions { PrefetchCount = 0 });
        var taken = (await first.ReceiveMessagesAsync(2, LocalBus.Patience, Ct)).ToList();
        await using var second = bus.Client.CreateReceiver("credit", new ServiceBusReceiverOptions { PrefetchCount = 0 });
        var rest = await ReceiveAtLeastAsync(second, 3);
        if (taken.Count < 2)
        {
            taken.AddRange(await first.ReceiveMessagesAsync(2 - taken.Count, LocalBus.Patience, Ct));
        }

        Assert.Equal(["m0", "m1"], taken.Select(m => m.Body.ToString()));
        Assert.Equal(["m2", "m3", "m4"], rest.Select(m => m.Body.ToString()));
    }

    [Fact]
    public async Task Receive_and_delete_removes_the_message_on_delivery()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("rad", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("rad");
        await sender.SendMessageAsync(new ServiceBusMessage("once"), Ct);

        await using var receiver = bus.Client.CreateReceiver("rad", new ServiceBusReceiverOptions { ReceiveMode = ServiceBusReceiveMode.ReceiveAndDelete });
        var received = await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct);

        Assert.Equal("once", received?.Body.ToString());
        await using var peeker = bus.Client.CreateReceiver("rad");
        Assert.Empty(await peeker.PeekMessagesAsync(10, cancellationToken: Ct));
    }

    [Fact]
    public async Task Abandon_makes_the_message_available_again_with_a_higher_delivery_count()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("work", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("work");
        await sender.SendMessageAsync(new ServiceBusMessage("retry me"), Ct);
        await using var receiver = bus.Client.CreateReceiver("work");

        var first = await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct);
        Assert.NotNull(first);
        Assert.Equal(1, first.DeliveryCount);
        await receiver.AbandonMessageAsync(first, new Dictionary<string, object> { ["attempt"] = 1 }, Ct);

        var second = await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct);
        Assert.NotNull(second);
        Assert.Equal(2, second.DeliveryCount);
        Assert.Equal(first.SequenceNumber, second.SequenceNumber);
        Assert.Equal(1, second.ApplicationProperties["attempt"]);
        Assert.NotEqual(first.LockToken, second.LockToken);
        await receiver.CompleteMessageAsync(second, Ct);
    }

    [Fact]
    public async Task Exceeding_max_delivery_count_moves_the_message_to_the_dead_letter_queue()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("poison", new LocalQueueOptions { MaxDeliveryCount = 3 }, Ct);
        await using var sender = bus.Client.CreateSender("poison");
        await sender.SendMessageAsync(new ServiceBusMessage("bad") { MessageId = "poison-1" }, Ct);
        await using var receiver = bus.Client.CreateReceiver("poison");

        for (int attempt = 1; attempt <= 3; attempt++)
        {
            var message = await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct);
            Assert.NotNull(message);
            Assert.Equal(attempt, message.DeliveryCount);
            await receiver.AbandonMessageAsync(message, cancellationToken: Ct);
        }

        Assert.Null(await receiver.ReceiveMessageAsync(TimeSpan.FromMilliseconds(500), Ct));
        await using var deadLetters = bus.Client.CreateReceiver("poison", new ServiceBusReceiverOptions { SubQueue = SubQueue.DeadLetter });
        var dead = await deadLetters.ReceiveMessageAsync(LocalBus.Patience, Ct);
        Assert.NotNull(dead);
        Assert.Equal("poison-1", dead.MessageId);
        Assert.Equal("MaxDeliveryCountExceeded", dead.DeadLetterReason);
        Assert.Equal("Message could not be consumed after 3 delivery attempts.", dead.DeadLetterErrorDescription);
        Assert.Equal("poison", dead.DeadLetterSource);
        await deadLetters.CompleteMessageAsync(dead, Ct);
    }

    [Fact]
    public async Task Explicit_dead_letter_keeps_reason_description_and_modified_properties()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("invoices", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("invoices");
        var original = new ServiceBusMessage("unparseable") { MessageId = "inv-7" };
        original.ApplicationProperties["tenant"] = "contoso";
        await sender.SendMessageAsync(original, Ct);
        await using var receiver = bus.Client.CreateReceiver("invoices");
        var message = await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct);
        Assert.NotNull(message);

        await receiver.DeadLetterMessageAsync(message, new Dictionary<string, object> { ["failed-at"] = "parser", ["attempts"] = 4 }, "InvalidPayload", "The body is not JSON.", Ct);

        // Service Bus accepts the sub-queue name in any casing.
        await using var deadLetters = bus.Client.CreateReceiver("invoices/$deadletterqueue");
        var dead = await deadLetters.ReceiveMessageAsync(LocalBus.Patience, Ct);
        Assert.NotNull(dead);
        Assert.Equal("inv-7", dead.MessageId);
        Assert.Equal("unparseable", dead.Body.ToString());
        Assert.Equal("InvalidPayload", dead.DeadLetterReason);
        Assert.Equal("The body is not JSON.", dead.DeadLetterErrorDescription);
        Assert.Equal("parser", dead.ApplicationProperties["failed-at"]);
        Assert.Equal(4, dead.ApplicationProperties["attempts"]);
        Assert.Equal("contoso", dead.ApplicationProperties["tenant"]);
        Assert.Null(await receiver.ReceiveMessageAsync(TimeSpan.FromMilliseconds(300), Ct));
    }

    [Fact]
    public async Task Expired_lock_redelivers_and_settling_with_the_lost_lock_fails()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("slow", new LocalQueueOptions { LockDuration = ExpiringLock }, Ct);
        await using var sender = bus.Client.CreateSender("slow");
        await sender.SendMessageAsync(new ServiceBusMessage("take your time"), Ct);
        await using var receiver = bus.Client.CreateReceiver("slow");

        var first = await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct);
        Assert.NotNull(first);
        var second = await receiver.ReceiveMessageAsync(ExpiringLock + LocalBus.Patience, Ct);
        Assert.NotNull(second);
        Assert.Equal(first.SequenceNumber, second.SequenceNumber);
        Assert.Equal(2, second.DeliveryCount);
        Assert.True(DateTimeOffset.UtcNow >= first.LockedUntil.AddMilliseconds(-200));

        var failure = await Assert.ThrowsAsync<ServiceBusException>(() => receiver.CompleteMessageAsync(first, Ct));
        Assert.Equal(ServiceBusFailureReason.MessageLockLost, failure.Reason);
        await receiver.CompleteMessageAsync(second, Ct);
    }

    [Fact]
    public async Task Renewing_a_lock_extends_it_past_the_lock_duration()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("renew", new LocalQueueOptions { LockDuration = TimeSpan.FromSeconds(10) }, Ct);
        await using var sender = bus.Client.CreateSender("renew");
        await sender.SendMessageAsync(new ServiceBusMessage("hold"), Ct);
        await using var receiver = bus.Client.CreateReceiver("renew");
        var message = await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct);
        Assert.NotNull(message);
        var firstLock = message.LockedUntil;

        // Two renewals, each well inside the current lock, keep the message locked past its first lock's end.
        for (int renewal = 0; renewal < 2; renewal++)
        {
            await Task.Delay(TimeSpan.FromSeconds(2), Ct);
            await receiver.RenewMessageLockAsync(message, Ct);
        }

        Assert.True(message.LockedUntil >= firstLock.AddSeconds(3.5), $"lock {firstLock:O} -> {message.LockedUntil:O}");
        Assert.Null(await receiver.ReceiveMessageAsync(TimeSpan.FromMilliseconds(300), Ct));
        await receiver.CompleteMessageAsync(message, Ct);
    }

    [Fact]
    public async Task Deferred_message_is_received_by_sequence_number_and_completed()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("later", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("later");
        await sender.SendMessageAsync(new ServiceBusMessage("not now"), Ct);
        await using var receiver = bus.Client.CreateReceiver("later");
        var message = await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct);
        Assert.NotNull(message);

        await receiver.DeferMessageAsync(message, cancellationToken: Ct);
        Assert.Null(await receiver.ReceiveMessageAsync(TimeSpan.FromMilliseconds(300), Ct));

        var deferred = await receiver.ReceiveDeferredMessageAsync(message.SequenceNumber, Ct);
        Assert.Equal("not now", deferred.Body.ToString());
        Assert.Equal(ServiceBusMessageState.Deferred, deferred.State);
        await receiver.CompleteMessageAsync(deferred, Ct);

        var gone = await Assert.ThrowsAsync<ServiceBusException>(() => receiver.ReceiveDeferredMessageAsync(message.SequenceNumber, Ct));
        Assert.Equal(ServiceBusFailureReason.MessageNotFound, gone.Reason);
    }

    [Fact]
    public async Task Deferred_messages_are_settled_over_the_management_link()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("parked", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("parked");
        await sender.SendMessagesAsync([new ServiceBusMessage("abandon me"), new ServiceBusMessage("dead-letter me")], Ct);
        await using var receiver = bus.Client.CreateReceiver("parked");
        var received = await ReceiveAtLeastAsync(receiver, 2);
        foreach (var message in received)
        {
            await receiver.DeferMessageAsync(message, cancellationToken: Ct);
        }

        var deferred = await receiver.ReceiveDeferredMessagesAsync(received.Select(m => m.SequenceNumber), Ct);
        Assert.Equal(2, deferred.Count);
        await receiver.AbandonMessageAsync(deferred[0], new Dictionary<string, object> { ["note"] = "still parked" }, Ct);
        await receiver.DeadLetterMessageAsync(deferred[1], "GaveUp", "parked too long", Ct);

        var again = await receiver.ReceiveDeferredMessageAsync(deferred[0].SequenceNumber, Ct);
        Assert.Equal("still parked", again.ApplicationProperties["note"]);
        Assert.Equal(3, again.DeliveryCount);
        await receiver.CompleteMessageAsync(again, Ct);
        await using var deadLetters = bus.Client.CreateReceiver("parked", new ServiceBusReceiverOptions { SubQueue = SubQueue.DeadLetter });
        var dead = await deadLetters.ReceiveMessageAsync(LocalBus.Patience, Ct);
        Assert.Equal("dead-letter me", dead?.Body.ToString());
        Assert.Equal("GaveUp", dead?.DeadLetterReason);
        Assert.Equal("parked too long", dead?.DeadLetterErrorDescription);
    }

    [Fact]
    public async Task Locks_of_a_closed_receiver_settle_through_another_one_and_abandoned_messages_are_available_at_once()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("handover", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("handover");
        await sender.SendMessagesAsync([new ServiceBusMessage("done"), new ServiceBusMessage("again 1"), new ServiceBusMessage("again 2")], Ct);
        var options = new ServiceBusReceiverOptions { PrefetchCount = 0 };

        // A receiver that walked the queue to its end: it holds every lock, and its last, empty receive left credit behind.
        List<ServiceBusReceivedMessage> walked;
        await using (var walker = bus.Client.CreateReceiver("handover", options))
        {
            walked = await ReceiveAtLeastAsync(walker, 3);
            Assert.Empty(await walker.ReceiveMessagesAsync(10, TimeSpan.FromMilliseconds(500), Ct));
        }

        // Its lock tokens still settle, over the management link, through a receiver that never received them.
        await using var settler = bus.Client.CreateReceiver("handover", options);
        await settler.CompleteMessageAsync(walked[0], Ct);
        await settler.AbandonMessageAsync(walked[1], cancellationToken: Ct);
        await settler.AbandonMessageAsync(walked[2], cancellationToken: Ct);

        // The abandoned ones are available at once (well before the one-minute lock would have expired), the completed one is gone.
        await using var next = bus.Client.CreateReceiver("handover", options);
        var again = await ReceiveAtLeastAsync(next, 2);
        Assert.Equal(["again 1", "again 2"], again.Select(m => m.Body.ToString()));
        Assert.All(again, m => Assert.Equal(2, m.DeliveryCount));
        Assert.Empty(await next.ReceiveMessagesAsync(10, TimeSpan.FromMilliseconds(500), Ct));
    }

    [Fact]
    public async Task Scheduled_message_appears_at_its_time_and_a_cancelled_one_never_does()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("timed", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("timed");
        await using var receiver = bus.Client.CreateReceiver("timed");
        // Connect, authorise and attach before the schedule is chosen, so the time until it is not spent on link setup
        // and the scheduled message is still scheduled when it is peeked.
        Assert.Empty(await receiver.PeekMessagesAsync(10, fromSequenceNumber: 0, cancellationToken: Ct));
        using (await sender.CreateMessageBatchAsync(Ct))
        {
        }

        var lead = TimeSpan.FromSeconds(12);
        var at = DateTimeOffset.UtcNow + lead;
        var kept = await sender.ScheduleMessageAsync(new ServiceBusMessage("on time"), at, Ct);
        var cancelled = await sender.ScheduleMessageAsync(new ServiceBusMessage("never"), at, Ct);
        Assert.NotEqual(kept, cancelled);
        await sender.CancelScheduledMessageAsync(cancelled, Ct);

        var peeked = await receiver.PeekMessagesAsync(10, fromSequenceNumber: 0, cancellationToken: Ct);
        var scheduled = Assert.Single(peeked);
        Assert.Equal(ServiceBusMessageState.Scheduled, scheduled.State);
        Assert.Equal(kept, scheduled.SequenceNumber);

        var received = await receiver.ReceiveMessageAsync(lead + LocalBus.Patience, Ct);
        Assert.NotNull(received);
        Assert.Equal("on time", received.Body.ToString());
        // AMQP timestamps carry milliseconds, so the schedule the broker sees is the time truncated to the millisecond.
        Assert.True(DateTimeOffset.UtcNow >= DateTimeOffset.FromUnixTimeMilliseconds(at.ToUnixTimeMilliseconds()), "delivered before its scheduled time");
        Assert.Equal(at.ToUnixTimeMilliseconds(), received.ScheduledEnqueueTime.ToUnixTimeMilliseconds());
        await receiver.CompleteMessageAsync(received, Ct);
        Assert.Null(await receiver.ReceiveMessageAsync(TimeSpan.FromSeconds(1), Ct));
    }

    [Fact]
    public async Task Batch_is_unpacked_into_individual_messages()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("bulk", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("bulk");
        using var batch = await sender.CreateMessageBatchAsync(Ct);
        for (int i = 0; i < 10; i++)
        {
            var message = new ServiceBusMessage($"item-{i}") { MessageId = $"id-{i}" };
            message.ApplicationProperties["index"] = i;
            Assert.True(batch.TryAddMessage(message));
        }

        await sender.SendMessagesAsync(batch, Ct);

        await using var receiver = bus.Client.CreateReceiver("bulk", new ServiceBusReceiverOptions { ReceiveMode = ServiceBusReceiveMode.ReceiveAndDelete });
        var received = await ReceiveAtLeastAsync(receiver, 10);
        Assert.Equal(Enumerable.Range(0, 10).Select(i => $"item-{i}"), received.Select(m => m.Body.ToString()));
        Assert.Equal(Enumerable.Range(0, 10).Select(i => $"id-{i}"), received.Select(m => m.MessageId));
        Assert.Equal(Enumerable.Range(0, 10), received.Select(m => (int)m.ApplicationProperties["index"]));
    }

    [Fact]
    public async Task Peek_returns_messages_without_locking_them()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("peek", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("peek");
        await sender.SendMessagesAsync([new ServiceBusMessage("a"), new ServiceBusMessage("b"), new ServiceBusMessage("c")], Ct);
        await using var receiver = bus.Client.CreateReceiver("peek");

        var firstTwo = await receiver.PeekMessagesAsync(2, cancellationToken: Ct);
        var rest = await receiver.PeekMessagesAsync(10, cancellationToken: Ct);
        var fromTwo = await receiver.PeekMessagesAsync(10, fromSequenceNumber: 2, cancellationToken: Ct);

        Assert.Equal(["a", "b"], firstTwo.Select(m => m.Body.ToString()));
        Assert.Equal(["c"], rest.Select(m => m.Body.ToString()));
        Assert.Equal(["b", "c"], fromTwo.Select(m => m.Body.ToString()));
        var received = await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct);
        Assert.Equal("a", received?.Body.ToString());
        Assert.Equal(1, received?.DeliveryCount);
    }

    [Fact]
    public async Task Application_properties_of_every_supported_type_round_trip()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("types", cancellationToken: Ct);
        var now = new DateTime(2026, 11, 27, 10, 30, 15, 123, DateTimeKind.Utc);
        var values = new Dictionary<string, object>
        {
            ["string"] = "text",
            ["bool"] = true,
            ["byte"] = (byte)7,
            ["short"] = (short)-12,
            ["int"] = 42,
            ["uint"] = 42u,
            ["long"] = long.MaxValue,
            ["ulong"] = ulong.MaxValue,
            ["float"] = 1.5f,
            ["double"] = 2.25d,
            ["char"] = 'x',
            ["guid"] = Guid.Parse("5b0f1f0e-8d53-4b1c-9a55-1f0e2d3c4b5a"),
            ["datetime"] = now,
            ["datetimeoffset"] = new DateTimeOffset(now),
            ["timespan"] = TimeSpan.FromMinutes(90),
            ["uri"] = new Uri("https://example.org/a?b=c"),
            ["bytes"] = new byte[] { 1, 2, 3 },
        };
        var message = new ServiceBusMessage(new BinaryData([0, 255, 1]));
        foreach (var pair in values)
        {
            message.ApplicationProperties[pair.Key] = pair.Value;
        }

        await using var sender = bus.Client.CreateSender("types");
        await sender.SendMessageAsync(message, Ct);
        await using var receiver = bus.Client.CreateReceiver("types");
        var received = await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct);

        Assert.NotNull(received);
        Assert.Equal(new byte[] { 0, 255, 1 }, received.Body.ToArray());
        foreach (var pair in values)
        {
            Assert.True(received.ApplicationProperties.TryGetValue(pair.Key, out var value), pair.Key);
            Assert.Equal(pair.Value, value);
        }
    }

    [Fact]
    public async Task Value_and_sequence_bodies_round_trip()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("bodies", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("bodies");
        var value = new Azure.Core.Amqp.AmqpAnnotatedMessage(Azure.Core.Amqp.AmqpMessageBody.FromValue("a value"));
        var sequence = new Azure.Core.Amqp.AmqpAnnotatedMessage(Azure.Core.Amqp.AmqpMessageBody.FromSequence([new List<object> { 1, "two" }]));
        await sender.SendMessageAsync(new ServiceBusMessage(value), Ct);
        await sender.SendMessageAsync(new ServiceBusMessage(sequence), Ct);

        await using var receiver = bus.Client.CreateReceiver("bodies", new ServiceBusReceiverOptions { ReceiveMode = ServiceBusReceiveMode.ReceiveAndDelete });
        var received = await ReceiveAtLeastAsync(receiver, 2);

        Assert.True(received[0].GetRawAmqpMessage().Body.TryGetValue(out var receivedValue));
        Assert.Equal("a value", receivedValue);
        Assert.True(received[1].GetRawAmqpMessage().Body.TryGetSequence(out var receivedSequence));
        Assert.Equal([1, "two"], Assert.Single(receivedSequence!));
    }

    [Fact]
    public async Task Expired_message_is_dead_lettered_when_the_queue_asks_for_it()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("ttl", new LocalQueueOptions { DeadLetteringOnMessageExpiration = true }, Ct);
        await bus.Endpoint.CreateQueueAsync("ttl-drop", cancellationToken: Ct);
        // The dropped one is sent first, so it has expired by the time the other one reaches the dead-letter queue.
        await using var dropSender = bus.Client.CreateSender("ttl-drop");
        await dropSender.SendMessageAsync(new ServiceBusMessage("stale") { TimeToLive = TimeSpan.FromMilliseconds(300) }, Ct);
        await using var sender = bus.Client.CreateSender("ttl");
        await sender.SendMessageAsync(new ServiceBusMessage("stale") { TimeToLive = TimeSpan.FromMilliseconds(300) }, Ct);

        await using var deadLetters = bus.Client.CreateReceiver("ttl", new ServiceBusReceiverOptions { SubQueue = SubQueue.DeadLetter });
        var dead = await deadLetters.ReceiveMessageAsync(LocalBus.Patience, Ct);
        Assert.NotNull(dead);
        Assert.Equal("TTLExpiredException", dead.DeadLetterReason);

        Assert.Equal(TimeSpan.FromMilliseconds(300), dead.TimeToLive);

        await using var dropReceiver = bus.Client.CreateReceiver("ttl-drop");
        Assert.Null(await dropReceiver.ReceiveMessageAsync(TimeSpan.FromMilliseconds(500), Ct));
        await using var dropDeadLetters = bus.Client.CreateReceiver("ttl-drop", new ServiceBusReceiverOptions { SubQueue = SubQueue.DeadLetter });
        Assert.Empty(await dropDeadLetters.PeekMessagesAsync(10, cancellationToken: Ct));
    }

    [Fact]
    public async Task The_entity_default_time_to_live_caps_the_message_one()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("capped", new LocalQueueOptions { DefaultMessageTimeToLive = TimeSpan.FromMinutes(5) }, Ct);
        await using var sender = bus.Client.CreateSender("capped");
        await sender.SendMessageAsync(new ServiceBusMessage("short-lived by default"), Ct);
        await sender.SendMessageAsync(new ServiceBusMessage("shorter") { TimeToLive = TimeSpan.FromMinutes(1) }, Ct);
        await sender.SendMessageAsync(new ServiceBusMessage("asks for longer") { TimeToLive = TimeSpan.FromHours(1) }, Ct);

        await using var receiver = bus.Client.CreateReceiver("capped", new ServiceBusReceiverOptions { ReceiveMode = ServiceBusReceiveMode.ReceiveAndDelete });
        var received = await ReceiveAtLeastAsync(receiver, 3);

        Assert.Equal([TimeSpan.FromMinutes(5), TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(5)], received.Select(m => m.TimeToLive));
        Assert.All(received, m => Assert.InRange(m.ExpiresAt - (m.EnqueuedTime + m.TimeToLive), TimeSpan.FromSeconds(-1), TimeSpan.FromSeconds(1)));
    }

    [Fact]
    public async Task Unknown_entity_is_reported_as_not_found()
    {
        await using var bus = await LocalBus.StartAsync();
        await using var sender = bus.Client.CreateSender("missing");

        var failure = await Assert.ThrowsAsync<ServiceBusException>(() => sender.SendMessageAsync(new ServiceBusMessage("x"), Ct));

        Assert.Equal(ServiceBusFailureReason.MessagingEntityNotFound, failure.Reason);
    }

    [Fact]
    public async Task Receiving_from_an_unknown_entity_or_with_sessions_fails_clearly()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("plain", cancellationToken: Ct);
        await using var receiver = bus.Client.CreateReceiver("nowhere");

        var missing = await Assert.ThrowsAsync<ServiceBusException>(() => receiver.ReceiveMessageAsync(TimeSpan.FromSeconds(1), Ct));
        var sessions = await Assert.ThrowsAnyAsync<Exception>(() => bus.Client.AcceptNextSessionAsync("plain", cancellationToken: Ct));

        Assert.Equal(ServiceBusFailureReason.MessagingEntityNotFound, missing.Reason);
        Assert.Contains("Session", sessions.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Token_signed_with_another_key_is_refused()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("secure", cancellationToken: Ct);
        var wrongKey = bus.Endpoint.ConnectionString.Replace("SharedAccessKey=SAS_KEY_VALUE", "SharedAccessKey=not-the-key", StringComparison.Ordinal);
        await using var client = new ServiceBusClient(wrongKey, new ServiceBusClientOptions { RetryOptions = new ServiceBusRetryOptions { MaxRetries = 0, TryTimeout = TimeSpan.FromSeconds(30) } });
        await using var sender = client.CreateSender("secure");

        var failure = await Assert.ThrowsAsync<UnauthorizedAccessException>(() => sender.SendMessageAsync(new ServiceBusMessage("x"), Ct));

        Assert.Contains("signature", failure.Message, StringComparison.OrdinalIgnoreCase);
        await using var receiver = bus.Client.CreateReceiver("secure");
        Assert.Empty(await receiver.PeekMessagesAsync(1, cancellationToken: Ct));
    }

    internal static async Task<List<ServiceBusReceivedMessage>> ReceiveAtLeastAsync(ServiceBusReceiver receiver, int count)
    {
        var received = new List<ServiceBusReceivedMessage>();
        var deadline = DateTime.UtcNow + LocalBus.Patience;
        while (received.Count < count && DateTime.UtcNow < deadline)
        {
            received.AddRange(await receiver.ReceiveMessagesAsync(count - received.Count, TimeSpan.FromSeconds(2), Ct));
        }

        return received;
    }
}
