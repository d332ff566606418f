using System.Diagnostics;
using Azure.Messaging.ServiceBus;

namespace Messaging.LocalServiceBus.Tests;

public sealed class SessionTests
{
    static CancellationToken Ct => TestContext.Current.CancellationToken;

    static async Task<LocalBus> StartWithSessionQueueAsync(TimeSpan lockDuration, Action<ServiceBusClientOptions>? configure = null)
    {
        var bus = await LocalBus.StartAsync(configure);
        await bus.Endpoint.CreateQueueAsync("orders", new LocalQueueOptions { RequiresSession = true, LockDuration = lockDuration, MaxDeliveryCount = 5 }, Ct);
        return bus;
    }

    static async Task SendAsync(LocalBus bus, params (string Session, string Body)[] messages)
    {
        await using var sender = bus.Client.CreateSender("orders");
        foreach (var (session, body) in messages)
        {
            await sender.SendMessageAsync(new ServiceBusMessage(body) { SessionId = session }, Ct);
        }
    }

    static async Task<List<ServiceBusReceivedMessage>> ReceiveAsync(ServiceBusReceiver receiver, int count)
    {
        var received = new List<ServiceBusReceivedMessage>();
        var deadline = DateTime.UtcNow + LocalBus.Patience;
        while (received.Count < count && DateTime.UtcNow < deadline)
        {
            received.AddRange(await receiver.ReceiveMessagesAsync(count - received.Count, TimeSpan.FromSeconds(1), Ct));
        }

        return received;
    }

    [Fact]
    public async Task Next_session_is_the_oldest_unlocked_one_its_messages_come_in_order_and_its_lock_is_exclusive()
    {
        await using var bus = await StartWithSessionQueueAsync(TimeSpan.FromSeconds(30));
        await SendAsync(bus, ("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2"), ("a", "a3"));

        await using var first = await bus.Client.AcceptNextSessionAsync("orders", cancellationToken: Ct);
        await using var second = await bus.Client.AcceptNextSessionAsync("orders", cancellationToken: Ct);
        var ofA = await ReceiveAsync(first, 3);
        var ofB = await ReceiveAsync(second, 2);
        var taken = await Assert.ThrowsAsync<ServiceBusException>(() => bus.Client.AcceptSessionAsync("orders", "a", cancellationToken: Ct));

        Assert.Equal("a", first.SessionId);
        Assert.Equal("b", second.SessionId);
        Assert.True(first.SessionLockedUntil > DateTimeOffset.UtcNow.AddSeconds(20), $"session locked until {first.SessionLockedUntil}");
        Assert.Equal(["a1", "a2", "a3"], ofA.Select(m => m.Body.ToString()));
        Assert.Equal(["b1", "b2"], ofB.Select(m => m.Body.ToString()));
        Assert.All(ofA, m => Assert.Equal("a", m.SessionId));
        Assert.Equal(ServiceBusFailureReason.SessionCannotBeLocked, taken.Reason);
        foreach (var message in ofA)
        {
            await first.CompleteMessageAsync(message, Ct);
        }
    }

    [Fact]
    public async Task Abandoned_message_comes_back_first_within_its_session()
    {
        await using var bus = await StartWithSessionQueueAsync(TimeSpan.FromSeconds(30));
        await SendAsync(bus, ("a", "a1"), ("a", "a2"), ("a", "a3"));
        await using var receiver = await bus.Client.AcceptNextSessionAsync("orders", cancellationToken: Ct);
        var firstTwo = await ReceiveAsync(receiver, 2);

        await receiver.AbandonMessageAsync(firstTwo[0], cancellationToken: Ct);
        var next = await ReceiveAsync(receiver, 1);

        Assert.Equal("a1", next.Single().Body.ToString());
        Assert.Equal(2, next.Single().DeliveryCount);
        await receiver.CompleteMessageAsync(next.Single(), Ct);
        await receiver.CompleteMessageAsync(firstTwo[1], Ct);
        Assert.Equal("a3", (await ReceiveAsync(receiver, 1)).Single().Body.ToString());
    }

    [Fact]
    public async Task Renewed_session_lock_outlasts_the_lock_duration()
    {
        await using var bus = await StartWithSessionQueueAsync(TimeSpan.FromSeconds(2));
        await SendAsync(bus, ("a", "a1"));
        await using var receiver = await bus.Client.AcceptNextSessionAsync("orders", cancellationToken: Ct);
        var message = (await ReceiveAsync(receiver, 1)).Single();
        var firstExpiry = receiver.SessionLockedUntil;

        // Renewing every half second for three lock durations.
        var held = Stopwatch.StartNew();
        while (held.Elapsed < TimeSpan.FromSeconds(6))
        {
            await receiver.RenewSessionLockAsync(Ct);
            await Task.Delay(TimeSpan.FromMilliseconds(500), Ct);
        }

        Assert.True(receiver.SessionLockedUntil > firstExpiry.AddSeconds(3), $"{receiver.SessionLockedUntil} after {firstExpiry}");
        await receiver.CompleteMessageAsync(message, Ct);
    }

    [Fact]
    public async Task Expired_session_lock_is_lost_and_another_receiver_gets_the_session_in_order()
    {
        await using var bus = await StartWithSessionQueueAsync(TimeSpan.FromSeconds(1));
        await SendAsync(bus, ("a", "a1"), ("a", "a2"));
        await using var dying = await bus.Client.AcceptNextSessionAsync("orders", cancellationToken: Ct);
        var held = await ReceiveAsync(dying, 2);

        // Nothing renews the lock: another receiver gets the session once it expired, with both messages again, in order.
        ServiceBusSessionReceiver? next = null;
        var deadline = DateTime.UtcNow + LocalBus.Patience;
        while (next is null && DateTime.UtcNow < deadline)
        {
            try
            {
                next = await bus.Client.AcceptSessionAsync("orders", "a", cancellationToken: Ct);
            }
            catch (ServiceBusException ex) when (ex.Reason == ServiceBusFailureReason.SessionCannotBeLocked)
            {
                await Task.Delay(100, Ct);
            }
        }

        Assert.NotNull(next);
        await using (next)
        {
            var again = await ReceiveAsync(next, 2);
            var lost = await Assert.ThrowsAnyAsync<Exception>(() => dying.CompleteMessageAsync(held[0], Ct));

            AssertSessionLost(lost);
            Assert.Equal(["a1", "a2"], again.Select(m => m.Body.ToString()));
            Assert.All(again, m => Assert.Equal(2, m.DeliveryCount));
        }
    }

    [Fact]
    public async Task Closing_a_session_receiver_releases_the_session_at_once()
    {
        await using var bus = await StartWithSessionQueueAsync(TimeSpan.FromMinutes(5));
        await SendAsync(bus, ("a", "a1"), ("a", "a2"));
        var closing = await bus.Client.AcceptNextSessionAsync("orders", cancellationToken: Ct);
        Assert.Single(await ReceiveAsync(closing, 1));
        await closing.DisposeAsync();

        // The lock duration is five minutes: only the release on close hands the session over now.
        await using var next = await bus.Client.AcceptNextSessionAsync("orders", cancellationToken: Ct);
        var again = await ReceiveAsync(next, 2);

        Assert.Equal("a", next.SessionId);
        Assert.Equal(["a1", "a2"], again.Select(m => m.Body.ToString()));
        Assert.Equal([2, 1], again.Select(m => m.DeliveryCount));
    }

    [Fact]
    public async Task Injected_lock_expiry_loses_the_session()
    {
        await using var bus = await StartWithSessionQueueAsync(TimeSpan.FromMinutes(5));
        await SendAsync(bus, ("a", "a1"));
        await using var receiver = await bus.Client.AcceptNextSessionAsync("orders", cancellationToken: Ct);
        var message = (await ReceiveAsync(receiver, 1)).Single();

        Assert.Equal(1, bus.Endpoint.ExpireLocks("orders"));
        var renew = await Assert.ThrowsAnyAsync<Exception>(() => receiver.RenewSessionLockAsync(Ct));
        var complete = await Assert.ThrowsAnyAsync<Exception>(() => receiver.CompleteMessageAsync(message, Ct));

        AssertSessionLost(renew);
        AssertSessionLost(complete);
    }

    // The endpoint detaches the link of a lost session with com.microsoft:session-lock-lost, as Service Bus does; an SDK
    // operation racing the detach reports SessionLockLost, and once the SDK has seen it the receiver is closed.
    static void AssertSessionLost(Exception exception) =>
        Assert.True(exception is ObjectDisposedException or ServiceBusException { Reason: ServiceBusFailureReason.SessionLockLost }, exception.ToString());

    [Fact]
    public async Task Accepting_when_no_session_is_available_times_out_as_the_sdk_expects()
    {
        await using var bus = await StartWithSessionQueueAsync(TimeSpan.FromSeconds(30),
            o => o.RetryOptions = new ServiceBusRetryOptions { MaxRetries = 0, TryTimeout = TimeSpan.FromSeconds(2) });
        await SendAsync(bus, ("a", "a1"));
        await using var holder = await bus.Client.AcceptNextSessionAsync("orders", cancellationToken: Ct);

        // The only session is held: nothing is available for a second receiver.
        var waited = Stopwatch.StartNew();
        var timeout = await Assert.ThrowsAsync<ServiceBusException>(() => bus.Client.AcceptNextSessionAsync("orders", cancellationToken: Ct));

        Assert.Equal(ServiceBusFailureReason.ServiceTimeout, timeout.Reason);
        Assert.True(waited.Elapsed >= TimeSpan.FromSeconds(1), $"gave up after {waited.Elapsed}");
        Assert.True(timeout.IsTransient);
    }

    [Fact]
    public async Task Waiting_accept_gets_a_session_that_arrives_meanwhile()
    {
        await using var bus = await StartWithSessionQueueAsync(TimeSpan.FromSeconds(30));
        var accepting = bus.Client.AcceptNextSessionAsync("orders", cancellationToken: Ct);
        await SendAsync(bus, ("late", "l1"));

        await using var receiver = await accepting;

        Assert.Equal("late", receiver.SessionId);
        Assert.Equal("l1", (await ReceiveAsync(receiver, 1)).Single().Body.ToString());
    }

    [Fact]
    public async Task Session_state_is_kept_per_session()
    {
        await using var bus = await StartWithSessionQueueAsync(TimeSpan.FromSeconds(30));
        await using (var receiver = await bus.Client.AcceptSessionAsync("orders", "a", cancellationToken: Ct))
        {
            Assert.Null(await receiver.GetSessionStateAsync(Ct));
            await receiver.SetSessionStateAsync(new BinaryData("step 2"), Ct);
        }

        await using var again = await bus.Client.AcceptSessionAsync("orders", "a", cancellationToken: Ct);
        Assert.Equal("step 2", (await again.GetSessionStateAsync(Ct))?.ToString());
    }

    [Fact]
    public async Task Session_entities_refuse_plain_receivers_and_messages_without_a_session_id()
    {
        await using var bus = await StartWithSessionQueueAsync(TimeSpan.FromSeconds(30));
        await bus.Endpoint.CreateTopicAsync("events", cancellationToken: Ct);
        await bus.Endpoint.CreateSubscriptionAsync("events", "ordered", new LocalSubscriptionOptions { RequiresSession = true }, Ct);
        await using var plain = bus.Client.CreateReceiver("orders");
        await using var queueSender = bus.Client.CreateSender("orders");
        await using var topicSender = bus.Client.CreateSender("events");

        var receive = await Assert.ThrowsAnyAsync<Exception>(() => plain.ReceiveMessageAsync(TimeSpan.FromSeconds(1), Ct));
        var send = await Assert.ThrowsAnyAsync<Exception>(() => queueSender.SendMessageAsync(new ServiceBusMessage("no session"), Ct));
        await topicSender.SendMessageAsync(new ServiceBusMessage("no session") { MessageId = "keyless" }, Ct);
        await using var deadLetters = bus.Client.CreateReceiver("events", "ordered", new ServiceBusReceiverOptions { SubQueue = SubQueue.DeadLetter });
        var dead = await deadLetters.ReceiveMessageAsync(LocalBus.Patience, Ct);

        Assert.Contains("requires sessions", receive.Message, StringComparison.Ordinal);
        Assert.Contains("SessionId was not set", send.Message, StringComparison.Ordinal);
        Assert.Equal("keyless", dead?.MessageId);
        Assert.Equal("Session ID is null", dead?.DeadLetterReason);
    }
}
