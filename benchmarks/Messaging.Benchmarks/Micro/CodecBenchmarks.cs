using BenchmarkDotNet.Attributes;
using CloudNative.CloudEvents;
using Messaging.Envelope;
using Messaging.PubSub;
using Messaging.RabbitMQ;
using RabbitMQ.Client;

namespace Messaging.Benchmarks.Micro;

/// <summary>Per-event cost of each wire mapping: encode on publish, decode on receive (1 KB of data, typical attributes).</summary>
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
        Data = new byte[1024],
    };

    private RabbitMqCloudEventCodec _rabbit = null!;
    private PubSubCodec _pubsub = null!;
    private BasicProperties _rabbitProperties = null!;
    private ReadOnlyMemory<byte> _rabbitBody;
    private Messaging.PubSub.Grpc.PubsubMessage _pubsubMessage = null!;
    private ReadOnlyMemory<byte> _structured;

    [GlobalSetup]
    public void Setup()
    {
        _event["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        _rabbit = new RabbitMqCloudEventCodec(RabbitMqContentMode.Binary, [], 1 << 24);
        _pubsub = new PubSubCodec(PubSubContentMode.Binary, 1 << 24, []);
        (_rabbitProperties, _rabbitBody, _) = _rabbit.Encode(_event);
        _pubsubMessage = _pubsub.Encode(_event);
        _structured = StructuredJson.Encode(_event);
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
    public ReadOnlyMemory<byte> StructuredEncode() => StructuredJson.Encode(_event);

    [Benchmark]
    public CloudEvent StructuredDecode() => StructuredJson.Decode(_structured, StructuredJson.MediaType, null);
}
