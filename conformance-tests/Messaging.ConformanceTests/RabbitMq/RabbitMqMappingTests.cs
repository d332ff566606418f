using System.Text;
using CloudNative.CloudEvents;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.ConformanceTests.Transports;
using Messaging.RabbitMQ;
using RabbitMQ.Client;

namespace Messaging.ConformanceTests.RabbitMq;

/// <summary>The documented AMQP 0-9-1 wire mapping, checked on the wire with the plain client.</summary>
[Collection(RabbitMqCollection.Name)]
public sealed class RabbitMqMappingTests(RabbitMqFixture fixture) : IClassFixture<RabbitMqFixture>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private async Task<BasicGetResult> PublishAndCaptureAsync(ContentMode mode, CloudEvent cloudEvent)
    {
        if (fixture.UnavailableReason is { } reason)
        {
            Assert.SkipWhen(Environment.GetEnvironmentVariable("MESSAGING_CONFORMANCE_REQUIRE") is null, reason);
            Assert.Fail(reason);
        }
        var topic = "ct-map-" + Guid.NewGuid().ToString("N")[..8];
        var uri = Environment.GetEnvironmentVariable("MESSAGING_RABBITMQ_URI") ?? "amqp://guest:guest@127.0.0.1:5672/";
        await using var connection = await new ConnectionFactory { Uri = new Uri(uri) }.CreateConnectionAsync(Ct);
        await using var channel = await connection.CreateChannelAsync(cancellationToken: Ct);
        await channel.ExchangeDeclareAsync(topic, ExchangeType.Fanout, durable: true, autoDelete: true, cancellationToken: Ct);
        var capture = (await channel.QueueDeclareAsync(string.Empty, durable: false, exclusive: true, autoDelete: true, cancellationToken: Ct)).QueueName;
        await channel.QueueBindAsync(capture, topic, "#", cancellationToken: Ct);

        await using var transport = new RabbitMqTransport(new RabbitMqTransportOptions { Uri = uri, ContentMode = mode }, [],
            Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance);
        await transport.PublishAsync(topic, [cloudEvent], Ct);
        var message = await Wait.UntilAsync(() => channel.BasicGetAsync(capture, autoAck: true, Ct), m => m is not null, "the message is captured");
        return message!;
    }

    private static CloudEvent Sample() => new()
    {
        Id = "map-1",
        Source = new Uri("urn:map"),
        Type = "com.example.mapped",
        Subject = "subj",
        DataContentType = "text/plain",
        Data = Encoding.UTF8.GetBytes("hello"),
    };

    [Fact(Timeout = 30_000)]
    public async Task Binary_mode_uses_cloudEvents_prefixed_headers_and_the_content_type_property()
    {
        var message = await PublishAndCaptureAsync(ContentMode.Binary, Sample());
        var headers = message.BasicProperties.Headers!;
        Assert.Equal("1.0", Encoding.UTF8.GetString((byte[])headers["cloudEvents_specversion"]!));
        Assert.Equal("map-1", Encoding.UTF8.GetString((byte[])headers["cloudEvents_id"]!));
        Assert.Equal("urn:map", Encoding.UTF8.GetString((byte[])headers["cloudEvents_source"]!));
        Assert.Equal("com.example.mapped", Encoding.UTF8.GetString((byte[])headers["cloudEvents_type"]!));
        Assert.Equal("subj", Encoding.UTF8.GetString((byte[])headers["cloudEvents_subject"]!));
        Assert.False(headers.ContainsKey("cloudEvents_datacontenttype"));
        Assert.Equal("text/plain", message.BasicProperties.ContentType);
        Assert.Equal("map-1", message.BasicProperties.MessageId);
        Assert.Equal("com.example.mapped", message.RoutingKey);
        Assert.True(message.BasicProperties.Persistent);
        Assert.Equal("hello", Encoding.UTF8.GetString(message.Body.Span));
    }

    [Fact(Timeout = 30_000)]
    public async Task Structured_mode_sends_one_cloudevents_json_document_that_decodes_back()
    {
        var message = await PublishAndCaptureAsync(ContentMode.Structured, Sample());
        Assert.StartsWith("application/cloudevents+json", message.BasicProperties.ContentType, StringComparison.Ordinal);
        var json = System.Text.Json.JsonDocument.Parse(message.Body);
        Assert.Equal("map-1", json.RootElement.GetProperty("id").GetString());
        Assert.Equal("text/plain", json.RootElement.GetProperty("datacontenttype").GetString());

        var codec = new RabbitMqCloudEventCodec(ContentMode.Binary, [], 1 << 20);
        var decoded = codec.Decode(message.BasicProperties, message.Body);
        Assert.Equal("map-1", decoded.Id);
        Assert.Equal("subj", decoded.Subject);
        Assert.Equal("hello", Encoding.UTF8.GetString((byte[])decoded.Data!));
    }

    [Fact]
    public void Receive_accepts_every_common_header_prefix_and_header_value_type()
    {
        var codec = new RabbitMqCloudEventCodec(ContentMode.Binary, [], 1 << 20);
        foreach (var prefix in new[] { "cloudEvents_", "cloudEvents:", "ce-", "ce_", "CE-" })
        {
            var properties = new BasicProperties
            {
                ContentType = "application/json",
                Headers = new Dictionary<string, object?>
                {
                    [prefix + "specversion"] = "1.0",
                    [prefix + "id"] = Encoding.UTF8.GetBytes("x-1"),
                    [prefix + "source"] = "urn:other",
                    [prefix + "type"] = "t.v1",
                    [prefix + "time"] = new AmqpTimestamp(1_700_000_000),
                    [prefix + "count"] = 42L,
                    ["unrelated"] = "ignored",
                },
            };
            var decoded = codec.Decode(properties, Encoding.UTF8.GetBytes("{}"));
            Assert.Equal("x-1", decoded.Id);
            Assert.Equal(DateTimeOffset.FromUnixTimeSeconds(1_700_000_000), decoded.Time);
            Assert.Equal("42", decoded["count"]);
            Assert.Null(decoded["unrelated"]);
            Assert.Equal("application/json", decoded.DataContentType);
        }
    }
}
