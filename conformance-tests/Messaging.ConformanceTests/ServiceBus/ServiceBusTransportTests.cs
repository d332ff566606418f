using Messaging.Transport;
using Azure.Messaging.ServiceBus;
using CloudNative.CloudEvents;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.ConformanceTests.Transports;
using Messaging.DeadLetters;
using Messaging.ServiceBus;
using Messaging.Topology;
using Microsoft.Extensions.Logging.Abstractions;

namespace Messaging.ConformanceTests.ServiceBus;

/// <summary>What the Service Bus adapter does beyond the shared cases: entity settings, the broker's safety net, batch splitting, clear start-up errors.</summary>
[Collection(ServiceBusCollection.Name)]
public sealed class ServiceBusTransportTests(ServiceBusFixture fixture) : IClassFixture<ServiceBusFixture>, IAsyncLifetime
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly string _topic = "ct-sbt-" + Guid.NewGuid().ToString("N")[..8];

    private string Subscription => _topic + "-s";

    public ValueTask InitializeAsync()
    {
        if (fixture.UnavailableReason is { } reason)
        {
            Assert.SkipWhen(Environment.GetEnvironmentVariable("MESSAGING_CONFORMANCE_REQUIRE") is null, reason);
            Assert.Fail(reason);
        }
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        if (fixture.UnavailableReason is null)
        {
            await fixture.DeleteSubscriptionAsync(_topic, Subscription);
        }
    }

    private ServiceBusTransport Transport(Action<ServiceBusTransportOptions>? configure = null)
    {
        var options = fixture.Apply(new ServiceBusTransportOptions());
        configure?.Invoke(options);
        return new ServiceBusTransport(options, [], NullLoggerFactory.Instance);
    }

    private MessagingTopology Topology() => new([_topic], [new SubscriptionDefinition { Name = Subscription, Topic = _topic }]);

    private static CloudEvent Event(byte[]? data = null) => new()
    {
        Id = Guid.NewGuid().ToString(),
        Source = new Uri("urn:servicebus:test"),
        Type = "com.example.servicebus",
        DataContentType = "application/octet-stream",
        Data = data ?? [1, 2, 3],
    };

    [Fact(Timeout = 60_000)]
    public async Task Provisioning_is_idempotent_and_gives_both_entities_the_safety_net_and_lock_duration()
    {
        await using var transport = Transport(o => o.MaxDeliveryCount = 7);
        await transport.ProvisionAsync(Topology(), Ct);
        await transport.ProvisionAsync(Topology(), Ct);

        var subscription = (await fixture.Administration.GetSubscriptionAsync(_topic, Subscription, Ct)).Value;
        Assert.Equal(7, subscription.MaxDeliveryCount);
        Assert.Equal(TimeSpan.FromSeconds(10), subscription.LockDuration);
        Assert.True(subscription.DeadLetteringOnMessageExpiration);
        var queue = (await fixture.Administration.GetQueueAsync(ServiceBusNames.RedeliveryQueue(Subscription), Ct)).Value;
        Assert.Equal(7, queue.MaxDeliveryCount);
        Assert.Equal(TimeSpan.FromSeconds(10), queue.LockDuration);
    }

    [Fact(Timeout = 60_000)]
    public async Task An_ordered_subscription_is_session_enabled_and_an_existing_one_without_sessions_fails_provisioning_naming_it()
    {
        await using var transport = Transport();
        var ordered = new MessagingTopology([_topic], [new SubscriptionDefinition { Name = Subscription, Topic = _topic, Ordered = true }]);
        await transport.ProvisionAsync(ordered, Ct);
        Assert.True((await fixture.Administration.GetSubscriptionAsync(_topic, Subscription, Ct)).Value.RequiresSession);
        Assert.False((await fixture.Administration.GetQueueAsync(ServiceBusNames.RedeliveryQueue(Subscription), Ct)).Value.RequiresSession);

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => transport.ProvisionAsync(Topology(), Ct));
        Assert.Contains($"'{Subscription}'", error.Message, StringComparison.Ordinal);
        Assert.Contains("RequiresSession", error.Message, StringComparison.Ordinal);
    }

    [Fact(Timeout = 60_000)]
    public async Task Deliveries_never_settled_are_dead_lettered_by_the_broker_and_read_back_as_delivery_limit_exceeded()
    {
        await using var transport = Transport(o => o.MaxDeliveryCount = 2);
        await transport.ProvisionAsync(Topology(), Ct);
        var sent = Event();
        await transport.PublishAsync(_topic, [sent], Ct);

        // A consumer that keeps giving the message back (as a crashing one would, only faster).
        await using (var receiver = fixture.Client.CreateReceiver(_topic, Subscription))
        {
            for (var delivery = 1; delivery <= 2; delivery++)
            {
                var message = await receiver.ReceiveMessageAsync(TimeSpan.FromSeconds(10), Ct);
                Assert.NotNull(message);
                Assert.Equal(delivery, message.DeliveryCount);
                await receiver.AbandonMessageAsync(message, cancellationToken: Ct);
            }
        }

        var dead = await Wait.UntilAsync(() => transport.DeadLetters.PeekAsync(Subscription, 10, Ct), d => d.Count == 1, "the broker dead-letters the message");
        var letter = dead.Single();
        Assert.Equal(DeadLetterReason.DeliveryLimitExceeded, letter.Metadata.Reason);
        Assert.Equal(sent.Id, letter.Event!.Id);
        Assert.Equal(Subscription, letter.Metadata.SourceSubscription);
        Assert.StartsWith("s:", letter.DeadLetterId, StringComparison.Ordinal);
    }

    [Fact(Timeout = 120_000)]
    public async Task Dead_letters_a_purge_keeps_are_all_there_for_the_next_walk_at_once()
    {
        const int count = 10;
        await using var transport = Transport();
        await transport.ProvisionAsync(Topology(), Ct);
        await transport.PublishAsync(_topic, Enumerable.Range(0, count).Select(_ => Event()).ToList(), Ct);
        await using (var receiver = fixture.Client.CreateReceiver(_topic, Subscription))
        {
            for (var dead = 0; dead < count;)
            {
                foreach (var message in await receiver.ReceiveMessagesAsync(count - dead, TimeSpan.FromSeconds(10), Ct))
                {
                    await receiver.DeadLetterMessageAsync(message, cancellationToken: Ct);
                    dead++;
                }
            }
        }

        // Each walk keeps every dead letter locked and gives them all back at its end; the next walk, right after, must
        // see every one of them again (none still locked by the walk before, none lost until its lock expires).
        for (var walk = 1; walk <= 4; walk++)
        {
            var seen = 0;
            Assert.Equal(0, await transport.DeadLetters.PurgeAsync(Subscription, _ => { seen++; return false; }, Ct));
            Assert.True(seen == count, $"walk {walk} saw {seen} of the {count} dead letters");
        }
        Assert.Equal(count, await transport.DeadLetters.PurgeAsync(Subscription, _ => true, Ct));
        Assert.Empty(await transport.DeadLetters.PeekAsync(Subscription, count, Ct));
    }

    [Fact(Timeout = 60_000)]
    public async Task A_publish_larger_than_one_message_batch_is_split_over_several_batches()
    {
        await using var transport = Transport();
        await transport.ProvisionAsync(Topology(), Ct);
        // Five events of 100 KiB: no 256 KiB batch holds more than two of them.
        var events = Enumerable.Range(0, 5).Select(_ => Event(new byte[100 * 1024])).ToList();
        await using (var sender = fixture.Client.CreateSender(_topic))
        {
            using var probe = await sender.CreateMessageBatchAsync(Ct);
            Assert.True(probe.MaxSizeInBytes < 3 * 100 * 1024, $"the broker's batch limit ({probe.MaxSizeInBytes} bytes) would not force a split");
        }
        await transport.PublishAsync(_topic, events, Ct);

        var received = new List<ServiceBusReceivedMessage>();
        await using var receiver = fixture.Client.CreateReceiver(_topic, Subscription, new ServiceBusReceiverOptions { ReceiveMode = ServiceBusReceiveMode.ReceiveAndDelete });
        await Wait.UntilAsync(async () =>
        {
            received.AddRange(await receiver.ReceiveMessagesAsync(10, TimeSpan.FromSeconds(1), Ct));
            return received.Count;
        }, count => count >= 5, "every event of the split publish arrives");
        Assert.Equal(events.Select(e => e.Id).Order(), received.Select(m => m.MessageId).Order());
        Assert.All(received, m => Assert.Equal(100 * 1024, m.Body.ToMemory().Length));
    }

    [Fact(Timeout = 60_000)]
    public async Task A_consumer_of_entities_that_do_not_exist_fails_at_start_naming_the_entity()
    {
        await using var transport = Transport();
        await using var pipeline = new ReceivePipeline(new SubscriptionDefinition { Name = Subscription, Topic = _topic }, (_, _) => Task.CompletedTask, null, null, transport.Name);
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => pipeline.StartAsync(transport, Ct));
        Assert.Contains(Subscription, error.Message, StringComparison.Ordinal);
        Assert.Contains("does not exist", error.Message, StringComparison.Ordinal);
        Assert.Contains("Provisioning", error.Message, StringComparison.Ordinal);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_subscription_name_beyond_the_Service_Bus_limit_is_refused_before_anything_is_created()
    {
        await using var transport = Transport();
        var tooLong = "s" + new string('x', 50);
        var error = await Assert.ThrowsAsync<ArgumentException>(() => transport.ProvisionAsync(
            new MessagingTopology([_topic], [new SubscriptionDefinition { Name = tooLong, Topic = _topic }]), Ct));
        Assert.Contains("at most 50", error.Message, StringComparison.Ordinal);
        Assert.False((await fixture.Administration.TopicExistsAsync(_topic, Ct)).Value);
    }

    [Fact(Timeout = 150_000)]
    public async Task A_handler_running_longer_than_the_lock_keeps_it_by_renewal_and_completes_once()
    {
        // 10 s, renewed every ~3.3 s: only a stall of several seconds on a loaded machine could let it lapse.
        var lockDuration = TimeSpan.FromSeconds(10);
        await using var transport = Transport(o => o.LockDuration = lockDuration);
        await transport.ProvisionAsync(Topology(), Ct);
        var calls = 0;
        var completed = new TaskCompletionSource();
        await using var consumer = new ReceivePipeline(new SubscriptionDefinition { Name = Subscription, Topic = _topic }, async (delivery, ct) =>
        {
            Interlocked.Increment(ref calls);
            // Three lock durations: without renewal the lock expires and the completion below is refused.
            await Task.Delay(lockDuration * 3, ct);
            await delivery.CompleteAsync(ct);
            completed.TrySetResult();
        }, null, null, transport.Name);
        await consumer.StartAsync(transport, Ct);
        await transport.PublishAsync(_topic, [Event()], Ct);

        await completed.Task.WaitAsync(lockDuration * 3 + TimeSpan.FromSeconds(60), Ct);
        await Wait.StaysAsync(() => Volatile.Read(ref calls) == 1, "a single delivery (the lock was never lost)", lockDuration + TimeSpan.FromSeconds(1));
        await using var receiver = fixture.Client.CreateReceiver(_topic, Subscription);
        Assert.Null(await receiver.PeekMessageAsync(cancellationToken: Ct));
        await consumer.StopAsync(Ct);
    }
}
