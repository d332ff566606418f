using System.Collections.Concurrent;
using System.Text;
using CloudNative.CloudEvents;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.ConformanceTests.Transports;
using Messaging.RabbitMQ;
using Messaging.Topology;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace Messaging.ConformanceTests.RabbitMq;

/// <summary>The exchange declared for a topic, checked against the broker with the plain client.</summary>
[Collection(RabbitMqCollection.Name)]
public sealed class RabbitMqTopologyTests(RabbitMqFixture fixture) : IClassFixture<RabbitMqFixture>
{
    private static readonly string Uri = Environment.GetEnvironmentVariable("MESSAGING_RABBITMQ_URI") ?? "amqp://guest:guest@127.0.0.1:5672/";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Theory(Timeout = 30_000)]
    [InlineData(RabbitMqExchangeType.Fanout, ExchangeType.Fanout, ExchangeType.Topic)]
    [InlineData(RabbitMqExchangeType.Topic, ExchangeType.Topic, ExchangeType.Fanout)]
    public async Task The_topic_exchange_has_the_configured_type(RabbitMqExchangeType setting, string expected, string other)
    {
        fixture.RequireBroker();
        var topic = "ct-xtype-" + Guid.NewGuid().ToString("N")[..8];
        var logs = new CapturingLoggerFactory();
        await using var connection = await new ConnectionFactory { Uri = new System.Uri(Uri) }.CreateConnectionAsync(Ct);
        try
        {
            await using (var transport = new RabbitMqTransport(new RabbitMqTransportOptions { Uri = Uri, ExchangeType = setting }, [], logs))
            {
                await transport.ProvisionAsync(new MessagingTopology([topic], []), Ct);
            }

            // The broker accepts a redeclaration only when it is equivalent, so these two declarations read the type back.
            await using (var same = await connection.CreateChannelAsync(cancellationToken: Ct))
            {
                await same.ExchangeDeclareAsync(topic, expected, durable: true, autoDelete: false, cancellationToken: Ct);
            }
            await using (var different = await connection.CreateChannelAsync(cancellationToken: Ct))
            {
                var refused = await Assert.ThrowsAsync<OperationInterruptedException>(() => different.ExchangeDeclareAsync(topic, other, durable: true, autoDelete: false, cancellationToken: Ct));
                Assert.Equal(Constants.PreconditionFailed, (int?)refused.ShutdownReason?.ReplyCode);
            }
            Assert.Empty(logs.Warnings);
        }
        finally
        {
            await using var cleanup = await connection.CreateChannelAsync(cancellationToken: Ct);
            await cleanup.ExchangeDeleteAsync(topic, ifUnused: false, cancellationToken: Ct);
        }
    }

    [Fact(Timeout = 30_000)]
    public async Task A_subscription_queue_dead_letters_at_least_once()
    {
        fixture.RequireBroker();
        var topic = "ct-dlx-" + Guid.NewGuid().ToString("N")[..8];
        var subscription = topic + "-sub";
        await using var connection = await new ConnectionFactory { Uri = new System.Uri(Uri) }.CreateConnectionAsync(Ct);
        try
        {
            await using (var transport = new RabbitMqTransport(new RabbitMqTransportOptions { Uri = Uri, CrashDeliveryLimit = 10 }, [], new CapturingLoggerFactory()))
            {
                await transport.ProvisionAsync(new MessagingTopology([topic], [new SubscriptionDefinition { Name = subscription, Topic = topic }]), Ct);
            }
            // Only an equivalent redeclaration is accepted: these arguments are the queue's.
            await using (var same = await connection.CreateChannelAsync(cancellationToken: Ct))
            {
                await same.QueueDeclareAsync(RabbitMqNames.Queue(subscription), durable: true, exclusive: false, autoDelete: false, arguments: new Dictionary<string, object?>
                {
                    ["x-queue-type"] = "quorum",
                    ["x-delivery-limit"] = 10,
                    ["x-dead-letter-exchange"] = string.Empty,
                    ["x-dead-letter-routing-key"] = RabbitMqNames.DeadLetterQueue(subscription),
                    ["x-dead-letter-strategy"] = "at-least-once",
                    ["x-overflow"] = "reject-publish",
                }, cancellationToken: Ct);
            }
            await using (var atMostOnce = await connection.CreateChannelAsync(cancellationToken: Ct))
            {
                var refused = await Assert.ThrowsAsync<OperationInterruptedException>(() => atMostOnce.QueueDeclareAsync(RabbitMqNames.Queue(subscription), durable: true,
                    exclusive: false, autoDelete: false, arguments: new Dictionary<string, object?>
                    {
                        ["x-queue-type"] = "quorum",
                        ["x-delivery-limit"] = 10,
                        ["x-dead-letter-exchange"] = string.Empty,
                        ["x-dead-letter-routing-key"] = RabbitMqNames.DeadLetterQueue(subscription),
                    }, cancellationToken: Ct));
                Assert.Equal(Constants.PreconditionFailed, (int?)refused.ShutdownReason?.ReplyCode);
            }
        }
        finally
        {
            await CleanUpAsync(connection, topic, subscription);
        }
    }

    [Fact(Timeout = 30_000)]
    public async Task A_subscription_queue_declared_by_an_earlier_version_is_used_as_it_is_with_a_warning()
    {
        fixture.RequireBroker();
        var topic = "ct-qold-" + Guid.NewGuid().ToString("N")[..8];
        var subscription = topic + "-sub";
        var logs = new CapturingLoggerFactory();
        await using var connection = await new ConnectionFactory { Uri = new System.Uri(Uri) }.CreateConnectionAsync(Ct);
        await using (var channel = await connection.CreateChannelAsync(cancellationToken: Ct))
        {
            // As an earlier version declared it: at-most-once dead-lettering.
            await channel.QueueDeclareAsync(RabbitMqNames.Queue(subscription), durable: true, exclusive: false, autoDelete: false, arguments: new Dictionary<string, object?>
            {
                ["x-queue-type"] = "quorum",
                ["x-delivery-limit"] = 10,
                ["x-dead-letter-exchange"] = string.Empty,
                ["x-dead-letter-routing-key"] = RabbitMqNames.DeadLetterQueue(subscription),
            }, cancellationToken: Ct);
        }
        try
        {
            await using var transport = new RabbitMqTransport(new RabbitMqTransportOptions { Uri = Uri }, [], logs);
            await transport.ProvisionAsync(new MessagingTopology([topic], [new SubscriptionDefinition { Name = subscription, Topic = topic }]), Ct);
            var warning = Assert.Single(logs.Warnings);
            Assert.Contains($"'{RabbitMqNames.Queue(subscription)}'", warning, StringComparison.Ordinal);
            Assert.Contains("To migrate", warning, StringComparison.Ordinal);

            // Still bound: the subscription receives through it.
            await transport.PublishAsync(topic, [TextEvent("still routed")], Ct);
            await using var reader = await connection.CreateChannelAsync(cancellationToken: Ct);
            var message = await Wait.UntilAsync(() => reader.BasicGetAsync(RabbitMqNames.Queue(subscription), autoAck: true, Ct), m => m is not null,
                "the event reaches the existing queue", TimeSpan.FromSeconds(20));
            Assert.Equal("still routed", Encoding.UTF8.GetString(message!.Body.Span));
        }
        finally
        {
            await CleanUpAsync(connection, topic, subscription);
        }
    }

    [Fact(Timeout = 30_000)]
    public async Task An_existing_exchange_of_another_type_is_used_as_it_is_with_a_warning()
    {
        fixture.RequireBroker();
        var topic = "ct-xold-" + Guid.NewGuid().ToString("N")[..8];
        var subscription = topic + "-sub";
        var logs = new CapturingLoggerFactory();
        await using var connection = await new ConnectionFactory { Uri = new System.Uri(Uri) }.CreateConnectionAsync(Ct);
        await using var channel = await connection.CreateChannelAsync(cancellationToken: Ct);
        // As an earlier version declared it.
        await channel.ExchangeDeclareAsync(topic, ExchangeType.Topic, durable: true, autoDelete: false, cancellationToken: Ct);
        try
        {
            await using var transport = new RabbitMqTransport(new RabbitMqTransportOptions { Uri = Uri }, [], logs);
            await transport.ProvisionAsync(new MessagingTopology([topic], [new SubscriptionDefinition { Name = subscription, Topic = topic }]), Ct);

            var warning = Assert.Single(logs.Warnings);
            Assert.Contains($"'{topic}'", warning, StringComparison.Ordinal);
            Assert.Contains("Messaging:RabbitMQ:ExchangeType", warning, StringComparison.Ordinal);
            Assert.Contains("inequivalent arg 'type'", warning, StringComparison.Ordinal);

            // Still a topic exchange, and the subscription still receives through it.
            await channel.ExchangeDeclareAsync(topic, ExchangeType.Topic, durable: true, autoDelete: false, cancellationToken: Ct);
            await transport.PublishAsync(topic, [TextEvent("still routed")], Ct);
            var message = await Wait.UntilAsync(() => channel.BasicGetAsync(RabbitMqNames.Queue(subscription), autoAck: true, Ct), m => m is not null,
                "the event reaches the subscription's queue", TimeSpan.FromSeconds(20));
            Assert.Equal("still routed", Encoding.UTF8.GetString(message!.Body.Span));
        }
        finally
        {
            await CleanUpAsync(connection, topic, subscription);
        }
    }

    // The bound guards against a hang: rabbitmqctl and the recovery can each take tens of seconds on a loaded machine.
    [Fact(Timeout = 180_000)]
    public async Task After_a_reconnect_an_exchange_recreated_with_another_type_is_used_as_it_is()
    {
        fixture.RequireBroker();
        if (!fixture.CanRestartBroker)
        {
            Assert.SkipWhen(Environment.GetEnvironmentVariable("MESSAGING_CONFORMANCE_REQUIRE") is null, "rabbitmqctl is not available to drop connections.");
            Assert.Fail("rabbitmqctl is not available to drop connections.");
        }
        var topic = "ct-xrec-" + Guid.NewGuid().ToString("N")[..8];
        var subscription = topic + "-sub";
        var clientName = "ct-recovery-" + Guid.NewGuid().ToString("N")[..8];
        var logs = new CapturingLoggerFactory();
        await using var connection = await new ConnectionFactory { Uri = new System.Uri(Uri) }.CreateConnectionAsync(Ct);
        try
        {
            await using var transport = new RabbitMqTransport(
                new RabbitMqTransportOptions { Uri = Uri, ClientName = clientName, NetworkRecoveryInterval = TimeSpan.FromMilliseconds(200), PublishTimeout = TimeSpan.FromSeconds(15) }, [], logs);
            await transport.ProvisionAsync(new MessagingTopology([topic], [new SubscriptionDefinition { Name = subscription, Topic = topic }]), Ct);
            Assert.Empty(logs.Warnings);

            // While the service runs, someone re-creates the fanout exchange as a topic exchange and binds the queue again.
            await using (var admin = await connection.CreateChannelAsync(cancellationToken: Ct))
            {
                await admin.ExchangeDeleteAsync(topic, ifUnused: false, cancellationToken: Ct);
                await admin.ExchangeDeclareAsync(topic, ExchangeType.Topic, durable: true, autoDelete: false, cancellationToken: Ct);
                await admin.QueueBindAsync(RabbitMqNames.Queue(subscription), topic, "#", cancellationToken: Ct);
            }

            // The broker drops the service's connection; the client reconnects and recovers the topology it declared.
            Assert.Equal(1, await fixture.CloseConnectionsAsync(clientName, Ct));

            // The publish retries while the connection recovers (up to PublishTimeout); it succeeds only if recovery
            // gets past the exchange it cannot re-declare.
            await transport.PublishAsync(topic, [TextEvent("after recovery")], Ct);
            await using var reader = await connection.CreateChannelAsync(cancellationToken: Ct);
            var message = await Wait.UntilAsync(() => reader.BasicGetAsync(RabbitMqNames.Queue(subscription), autoAck: true, Ct), m => m is not null,
                "the event published after recovery reaches the subscription's queue", TimeSpan.FromSeconds(20));
            Assert.Equal("after recovery", Encoding.UTF8.GetString(message!.Body.Span));
            Assert.Contains(logs.Warnings, w => w.Contains("lost", StringComparison.Ordinal));
            Assert.Contains(logs.Warnings, w => w.Contains($"'{topic}' was not re-declared on recovery", StringComparison.Ordinal));
        }
        finally
        {
            await CleanUpAsync(connection, topic, subscription);
        }
    }

    private static CloudEvent TextEvent(string text) => new()
    {
        Id = Guid.NewGuid().ToString(),
        Source = new System.Uri("urn:topology-test"),
        Type = "com.example.topology",
        DataContentType = "text/plain",
        Data = Encoding.UTF8.GetBytes(text),
    };

    private static async Task CleanUpAsync(IConnection connection, string topic, string subscription)
    {
        // A fresh channel: the test's own may have been closed by the failure being reported.
        await using var cleanup = await connection.CreateChannelAsync();
        await cleanup.QueueDeleteAsync(RabbitMqNames.Queue(subscription), ifUnused: false, ifEmpty: false);
        await cleanup.QueueDeleteAsync(RabbitMqNames.DeadLetterQueue(subscription), ifUnused: false, ifEmpty: false);
        await cleanup.ExchangeDeleteAsync(topic, ifUnused: false);
    }
}
