using System.Text;
using CloudNative.CloudEvents;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.ConformanceTests.Transports;
using Messaging.RabbitMQ;
using Messaging.Topology;
using RabbitMQ.Client;

namespace Messaging.ConformanceTests.RabbitMq;

/// <summary>
/// TLS against the local broker's TLS listener (127.0.0.1:5671), whose certificate a throwaway CA made by brokers.sh signed
/// (<c>MESSAGING_RABBITMQ_TLS_CA</c>, default /etc/rabbitmq/messaging-tls/ca.pem). The server certificate names localhost and 127.0.0.1.
/// </summary>
[Collection(RabbitMqCollection.Name)]
public sealed class RabbitMqTlsTests(RabbitMqFixture fixture) : IClassFixture<RabbitMqFixture>
{
    private static readonly string CaPath = Environment.GetEnvironmentVariable("MESSAGING_RABBITMQ_TLS_CA") ?? "/etc/rabbitmq/messaging-tls/ca.pem";
    private static readonly string TlsHost = Environment.GetEnvironmentVariable("MESSAGING_RABBITMQ_TLS_HOST") ?? "localhost";
    private static readonly string PlainUri = Environment.GetEnvironmentVariable("MESSAGING_RABBITMQ_URI") ?? "amqp://guest:guest@127.0.0.1:5672/";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private void RequireTlsListener()
    {
        var reason = fixture.UnavailableReason ?? (File.Exists(CaPath) ? null : $"No test CA at {CaPath}: run conformance-tests/brokers.sh to enable RabbitMQ's TLS listener.");
        if (reason is not null)
        {
            Assert.SkipWhen(Environment.GetEnvironmentVariable("MESSAGING_CONFORMANCE_REQUIRE") is null, reason);
            Assert.Fail(reason);
        }
    }

    private static CloudEvent TextEvent(string text) => new()
    {
        Id = Guid.NewGuid().ToString(),
        Source = new Uri("urn:test"),
        Type = "com.example.tls",
        DataContentType = "text/plain",
        Data = Encoding.UTF8.GetBytes(text),
    };

    /// <summary>Provisions a topic and subscription over TLS, publishes one event over TLS, reads it back over the plain listener.</summary>
    private static async Task RoundTripAsync(RabbitMqTransportOptions options)
    {
        var topic = "ct-tls-" + Guid.NewGuid().ToString("N")[..8];
        var subscription = topic + "-sub";
        await using var plain = await new ConnectionFactory { Uri = new Uri(PlainUri) }.CreateConnectionAsync(Ct);
        try
        {
            await using (var transport = new RabbitMqTransport(options, [], new CapturingLoggerFactory()))
            {
                await transport.ProvisionAsync(new MessagingTopology([topic], [new SubscriptionDefinition { Name = subscription, Topic = topic }]), Ct);
                await transport.PublishAsync(topic, [TextEvent("over tls")], Ct);
            }
            await using var channel = await plain.CreateChannelAsync(cancellationToken: Ct);
            var message = await Wait.UntilAsync(() => channel.BasicGetAsync(RabbitMqNames.Queue(subscription), autoAck: true, Ct), m => m is not null, "the event sent over TLS arrives");
            Assert.Equal("over tls", Encoding.UTF8.GetString(message!.Body.Span));
        }
        finally
        {
            await using var cleanup = await plain.CreateChannelAsync(cancellationToken: Ct);
            await cleanup.QueueDeleteAsync(RabbitMqNames.Queue(subscription), ifUnused: false, ifEmpty: false, cancellationToken: Ct);
            await cleanup.QueueDeleteAsync(RabbitMqNames.DeadLetterQueue(subscription), ifUnused: false, ifEmpty: false, cancellationToken: Ct);
            await cleanup.ExchangeDeleteAsync(topic, ifUnused: false, cancellationToken: Ct);
        }
    }

    [Fact(Timeout = 60_000)]
    public Task An_amqps_uri_connects_and_verifies_the_broker_against_the_configured_CA()
    {
        RequireTlsListener();
        return RoundTripAsync(new RabbitMqTransportOptions { Uri = $"amqps://guest:guest@{TlsHost}:5671/", TlsCaCertificatePath = CaPath });
    }

    [Fact(Timeout = 60_000)]
    public Task UseTls_with_host_and_port_connects_and_verifies_the_broker_against_the_configured_CA()
    {
        RequireTlsListener();
        return RoundTripAsync(new RabbitMqTransportOptions { Host = "127.0.0.1", Port = 5671, UseTls = true, TlsServerName = TlsHost, TlsCaCertificatePath = CaPath });
    }

    [Fact(Timeout = 60_000)]
    public async Task A_server_name_the_certificate_does_not_hold_fails_with_a_clear_error()
    {
        RequireTlsListener();
        await using var transport = new RabbitMqTransport(
            new RabbitMqTransportOptions { Host = "127.0.0.1", Port = 5671, UseTls = true, TlsServerName = "wrong.example", TlsCaCertificatePath = CaPath }, [], new CapturingLoggerFactory());
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => transport.ProvisionAsync(new MessagingTopology(["ct-tls-never"], []), Ct));
        Assert.Contains("TLS failed", error.Message, StringComparison.Ordinal);
        Assert.Contains("'wrong.example'", error.Message, StringComparison.Ordinal);
        Assert.Contains("Messaging:RabbitMQ:TlsServerName", error.Message, StringComparison.Ordinal);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_broker_certificate_from_a_CA_the_machine_does_not_trust_is_refused()
    {
        RequireTlsListener();
        await using var transport = new RabbitMqTransport(new RabbitMqTransportOptions { Uri = $"amqps://guest:guest@{TlsHost}:5671/" }, [], new CapturingLoggerFactory());
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => transport.ProvisionAsync(new MessagingTopology(["ct-tls-never"], []), Ct));
        Assert.Contains("not trusted", error.Message, StringComparison.Ordinal);
        Assert.Contains("Messaging:RabbitMQ:TlsCaCertificatePath", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("guest:guest", error.Message, StringComparison.Ordinal);
    }
}
