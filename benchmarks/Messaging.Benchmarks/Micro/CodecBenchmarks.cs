using BenchmarkDotNet.Attributes;
using CloudNative.CloudEvents;
using System.Text;
using Azure.Messaging.ServiceBus;
using Messaging.Aws;
using Messaging.Envelope;
using Messaging.PubSub;
using Messaging.RabbitMQ;
using Messaging.ServiceBus;
using RabbitMQ.Client;

namespace Messaging.Benchmarks.Micro;

/// <summary>Per-event cost of each wire mapping: encode on publish, decode on receive (1 KB of JSON data, typical attributes).</summary>
[MemoryDiagnoser]
public class CodecBenchmarks
{
    private readonly CloudEvent _event = new()
    {
        Id = Guid.NewGuid().ToString(),
        Source = new Uri("urn:bench:orders"),
        Type = "com.example.order.placed",
        Subject = "orders/42",
        Time = DateTimeOffset.UtcNow,
        DataContentType = "application/json",
        Data = Encoding.UTF8.GetBytes("{\"order\":\"" + new string('x', 1010) + "\"}"),
    };

    private RabbitMqCloudEventCodec _rabbit = null!;
    private PubSubCodec _pubsub = null!;
    private BasicProperties _rabbitProperties = null!;
    private ReadOnlyMemory<byte> _rabbitBody;
    private Messaging.PubSub.Grpc.PubsubMessage _pubsubMessage = null!;
    private ReadOnlyMemory<byte> _structured;
    private ServiceBusCloudEventCodec _serviceBus = null!;
    private ServiceBusMessage _serviceBusMessage = null!;
    private SnsSqsCodec _snsSqs = null!;
    private SqsWireMessage _sqsMessage = null!;

    [GlobalSetup]
    public void Setup()
    {
        _event["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        _rabbit = new RabbitMqCloudEventCodec(ContentMode.Binary, [], 1 << 24);
        _pubsub = new PubSubCodec(ContentMode.Binary, 1 << 24, []);
        (_rabbitProperties, _rabbitBody, _) = _rabbit.Encode(_event);
        _pubsubMessage = _pubsub.Encode(_event);
        _structured = StructuredJson.Encode(_event);
        _serviceBus = new ServiceBusCloudEventCodec(ContentMode.Binary, [], 1 << 24);
        _serviceBusMessage = _serviceBus.Encode(_event);
        _snsSqs = new SnsSqsCodec([]);
        _sqsMessage = _snsSqs.Encode(_event);
    }

    [Benchmark]
    public object RabbitMqEncode() => _rabbit.Encode(_event);

    [Benchmark]
    public CloudEvent RabbitMqDecode() => _rabbit.Decode(_rabbitProperties, _rabbitBody);

    [Benchmark]
    public object PubSubEncode() => _pubsub.Encode(_event);

    [Benchmark]
    public CloudEvent PubSubDecode() => _pubsub.Decode(_pubsubMessage);

    [Benchmark]
    public object ServiceBusEncode() => _serviceBus.Encode(_event);

    [Benchmark]
    public CloudEvent ServiceBusDecode() => _serviceBus.Decode(_serviceBusMessage.ContentType, _serviceBusMessage.ApplicationProperties.AsReadOnly(), _serviceBusMessage.Body.ToMemory());

    [Benchmark]
    public object SnsSqsEncode() => _snsSqs.Encode(_event);

    [Benchmark]
    public CloudEvent SnsSqsDecode() => _snsSqs.Decode(_sqsMessage.Body, _sqsMessage.Attributes);

    [Benchmark]
    public ReadOnlyMemory<byte> StructuredEncode() => StructuredJson.Encode(_event);

    [Benchmark]
    public CloudEvent StructuredDecode() => StructuredJson.Decode(_structured, StructuredJson.MediaType, null);
}
