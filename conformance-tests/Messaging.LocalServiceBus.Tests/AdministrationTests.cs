using Azure.Messaging.ServiceBus;
using Azure.Messaging.ServiceBus.Administration;

namespace Messaging.LocalServiceBus.Tests;

public sealed class AdministrationTests
{
    static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Queue_can_be_created_read_updated_and_deleted()
    {
        await using var bus = await LocalBus.StartAsync();
        var admin = new ServiceBusAdministrationClient(bus.Endpoint.AdministrationConnectionString);

        Assert.False((await admin.QueueExistsAsync("billing", Ct)).Value);
        var created = await admin.CreateQueueAsync(new CreateQueueOptions("billing")
        {
            MaxDeliveryCount = 4,
            LockDuration = TimeSpan.FromSeconds(5),
            DefaultMessageTimeToLive = TimeSpan.FromHours(1),
            DeadLetteringOnMessageExpiration = true,
        }, Ct);
        Assert.Equal("billing", created.Value.Name);
        Assert.Equal(4, created.Value.MaxDeliveryCount);
        Assert.True((await admin.QueueExistsAsync("billing", Ct)).Value);

        var conflict = await Assert.ThrowsAsync<ServiceBusException>(() => admin.CreateQueueAsync("billing", Ct));
        Assert.Equal(ServiceBusFailureReason.MessagingEntityAlreadyExists, conflict.Reason);

        var read = (await admin.GetQueueAsync("billing", Ct)).Value;
        Assert.Equal(TimeSpan.FromSeconds(5), read.LockDuration);
        Assert.Equal(TimeSpan.FromHours(1), read.DefaultMessageTimeToLive);
        Assert.True(read.DeadLetteringOnMessageExpiration);
        Assert.False(read.RequiresSession);

        read.MaxDeliveryCount = 7;
        var updated = (await admin.UpdateQueueAsync(read, Ct)).Value;
        Assert.Equal(7, updated.MaxDeliveryCount);
        Assert.Equal(7, (await admin.GetQueueAsync("billing", Ct)).Value.MaxDeliveryCount);

        await admin.DeleteQueueAsync("billing", Ct);
        Assert.False((await admin.QueueExistsAsync("billing", Ct)).Value);
        var missing = await Assert.ThrowsAsync<ServiceBusException>(() => admin.GetQueueAsync("billing", Ct));
        Assert.Equal(ServiceBusFailureReason.MessagingEntityNotFound, missing.Reason);
    }

    [Fact]
    public async Task Deleting_a_queue_detaches_its_receivers()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("doomed", cancellationToken: Ct);
        await using var receiver = bus.Client.CreateReceiver("doomed");
        Assert.Null(await receiver.ReceiveMessageAsync(TimeSpan.FromMilliseconds(200), Ct));
        var admin = new ServiceBusAdministrationClient(bus.Endpoint.AdministrationConnectionString);

        await admin.DeleteQueueAsync("doomed", Ct);

        // The endpoint detaches the receiver's link with amqp:not-found. A receive that was waiting on the link when the detach
        // arrived ends empty (that is the SDK's behaviour with Service Bus too); the next one re-attaches and is refused. So the
        // receiver is asked again until it fails, within a bound, and must never be handed a message.
        ServiceBusException? failure = null;
        var deadline = DateTime.UtcNow + LocalBus.Patience;
        while (failure is null && DateTime.UtcNow < deadline)
        {
            try
            {
                Assert.Null(await receiver.ReceiveMessageAsync(TimeSpan.FromSeconds(1), Ct));
            }
            catch (ServiceBusException ex)
            {
                failure = ex;
            }
        }

        Assert.NotNull(failure);
        Assert.Equal(ServiceBusFailureReason.MessagingEntityNotFound, failure.Reason);
    }

    [Fact]
    public async Task Topic_and_subscription_created_over_http_carry_messages_over_amqp()
    {
        await using var bus = await LocalBus.StartAsync();
        var admin = new ServiceBusAdministrationClient(bus.Endpoint.AdministrationConnectionString);

        await admin.CreateTopicAsync("news", Ct);
        await admin.CreateSubscriptionAsync(new CreateSubscriptionOptions("news", "reader") { MaxDeliveryCount = 2, LockDuration = TimeSpan.FromSeconds(3) }, Ct);
        Assert.True((await admin.TopicExistsAsync("news", Ct)).Value);
        Assert.True((await admin.SubscriptionExistsAsync("news", "reader", Ct)).Value);
        Assert.False((await admin.SubscriptionExistsAsync("news", "nobody", Ct)).Value);
        var subscription = (await admin.GetSubscriptionAsync("news", "reader", Ct)).Value;
        Assert.Equal(2, subscription.MaxDeliveryCount);
        Assert.Equal(TimeSpan.FromSeconds(3), subscription.LockDuration);

        await using var sender = bus.Client.CreateSender("news");
        await sender.SendMessageAsync(new ServiceBusMessage("headline"), Ct);
        var runtime = (await admin.GetSubscriptionRuntimePropertiesAsync("news", "reader", Ct)).Value;
        Assert.Equal(1, runtime.ActiveMessageCount);
        await using var receiver = bus.Client.CreateReceiver("news", "reader");
        Assert.Equal("headline", (await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct))?.Body.ToString());

        await admin.DeleteSubscriptionAsync("news", "reader", Ct);
        Assert.False((await admin.SubscriptionExistsAsync("news", "reader", Ct)).Value);
        await admin.DeleteTopicAsync("news", Ct);
        Assert.False((await admin.TopicExistsAsync("news", Ct)).Value);
    }

    [Fact]
    public async Task Dead_lettered_messages_are_forwarded_where_the_queue_says()
    {
        await using var bus = await LocalBus.StartAsync();
        var admin = new ServiceBusAdministrationClient(bus.Endpoint.AdministrationConnectionString);
        await admin.CreateQueueAsync("graveyard", Ct);
        await admin.CreateQueueAsync(new CreateQueueOptions("fragile") { ForwardDeadLetteredMessagesTo = "graveyard" }, Ct);
        Assert.EndsWith("/graveyard", (await admin.GetQueueAsync("fragile", Ct)).Value.ForwardDeadLetteredMessagesTo, StringComparison.Ordinal);

        await using var sender = bus.Client.CreateSender("fragile");
        await sender.SendMessageAsync(new ServiceBusMessage("broken"), Ct);
        await using var receiver = bus.Client.CreateReceiver("fragile");
        var message = await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct);
        await receiver.DeadLetterMessageAsync(message!, "Broken", "cannot be fixed", Ct);

        await using var graveyard = bus.Client.CreateReceiver("graveyard");
        var forwarded = await graveyard.ReceiveMessageAsync(LocalBus.Patience, Ct);
        Assert.Equal("broken", forwarded?.Body.ToString());
        Assert.Equal("Broken", forwarded?.DeadLetterReason);
        await using var ownDeadLetters = bus.Client.CreateReceiver("fragile", new ServiceBusReceiverOptions { SubQueue = SubQueue.DeadLetter });
        Assert.Empty(await ownDeadLetters.PeekMessagesAsync(10, cancellationToken: Ct));
    }

    [Fact]
    public async Task Subscriptions_report_their_single_default_rule()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateTopicAsync("ruled", cancellationToken: Ct);
        await bus.Endpoint.CreateSubscriptionAsync("ruled", "all", cancellationToken: Ct);
        var admin = new ServiceBusAdministrationClient(bus.Endpoint.AdministrationConnectionString);

        var rules = new List<RuleProperties>();
        await foreach (var rule in admin.GetRulesAsync("ruled", "all", Ct))
        {
            rules.Add(rule);
        }

        var only = Assert.Single(rules);
        Assert.Equal("$Default", only.Name);
        Assert.IsType<TrueRuleFilter>(only.Filter);
        await Assert.ThrowsAnyAsync<Exception>(() => admin.CreateRuleAsync("ruled", "all", new CreateRuleOptions("blue", new SqlRuleFilter("color = 'blue'")), Ct));
    }

    [Fact]
    public async Task Listing_pages_through_every_entity()
    {
        await using var bus = await LocalBus.StartAsync();
        for (int i = 0; i < 105; i++)
        {
            await bus.Endpoint.CreateTopicAsync($"topic-{i:D3}", cancellationToken: Ct);
        }

        await bus.Endpoint.CreateSubscriptionAsync("topic-042", "listener", cancellationToken: Ct);
        await bus.Endpoint.CreateQueueAsync("lonely", cancellationToken: Ct);
        var admin = new ServiceBusAdministrationClient(bus.Endpoint.AdministrationConnectionString);

        var topics = new List<string>();
        await foreach (var topic in admin.GetTopicsAsync(Ct))
        {
            topics.Add(topic.Name);
        }

        var queues = new List<string>();
        await foreach (var queue in admin.GetQueuesAsync(Ct))
        {
            queues.Add(queue.Name);
        }

        var subscriptions = new List<string>();
        await foreach (var subscription in admin.GetSubscriptionsAsync("topic-042", Ct))
        {
            subscriptions.Add(subscription.SubscriptionName);
        }

        Assert.Equal(Enumerable.Range(0, 105).Select(i => $"topic-{i:D3}"), topics);
        Assert.Equal(["lonely"], queues);
        Assert.Equal(["listener"], subscriptions);
    }

    [Fact]
    public async Task Requests_signed_with_another_key_are_refused()
    {
        await using var bus = await LocalBus.StartAsync();
        var wrongKey = bus.Endpoint.AdministrationConnectionString.Replace("SharedAccessKey=SAS_KEY_VALUE", "SharedAccessKey=guess", StringComparison.Ordinal);
        var admin = new ServiceBusAdministrationClient(wrongKey, new ServiceBusAdministrationClientOptions { Retry = { MaxRetries = 0 } });

        await Assert.ThrowsAsync<UnauthorizedAccessException>(() => admin.CreateQueueAsync("intruder", Ct));

        Assert.False((await new ServiceBusAdministrationClient(bus.Endpoint.AdministrationConnectionString).QueueExistsAsync("intruder", Ct)).Value);
    }

    [Fact]
    public async Task Sql_filters_are_refused_clearly_and_sessions_cannot_be_switched_on_an_existing_entity()
    {
        await using var bus = await LocalBus.StartAsync();
        var admin = new ServiceBusAdministrationClient(bus.Endpoint.AdministrationConnectionString);
        await admin.CreateTopicAsync("filtered", Ct);

        var filter = await Assert.ThrowsAnyAsync<Exception>(() => admin.CreateSubscriptionAsync(
            new CreateSubscriptionOptions("filtered", "only-red"), new CreateRuleOptions("red", new SqlRuleFilter("color = 'red'")), Ct));
        await admin.CreateSubscriptionAsync(new CreateSubscriptionOptions("filtered", "ordered") { RequiresSession = true }, Ct);
        var read = (await admin.GetSubscriptionAsync("filtered", "ordered", Ct)).Value;
        read.RequiresSession = false;
        var switched = await Assert.ThrowsAnyAsync<Exception>(() => admin.UpdateSubscriptionAsync(read, Ct));

        Assert.Contains("not supported", filter.Message, StringComparison.Ordinal);
        Assert.False((await admin.SubscriptionExistsAsync("filtered", "only-red", Ct)).Value);
        Assert.True((await admin.GetSubscriptionAsync("filtered", "ordered", Ct)).Value.RequiresSession);
        Assert.Contains("RequiresSession", switched.Message, StringComparison.Ordinal);
    }
}
