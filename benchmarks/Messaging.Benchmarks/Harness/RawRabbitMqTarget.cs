using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace Messaging.Benchmarks.Harness;

/// <summary>
/// RabbitMQ.Client 7 by hand, done competently, on the library's default topology: durable fanout exchange and quorum queue, persistent messages,
/// publisher confirms pipelined over a sliding window of 256, consumer with prefetch 200 and manual acks. With
/// <paramref name="cloudEventHeaders"/> it does the work the library does for a CloudEvent: the required attributes
/// (<c>specversion</c>, <c>id</c>, <c>source</c>, <c>type</c>) travel as <c>cloudEvents_*</c> headers, as a hand-written
/// CloudEvents producer would send them; without, it sends the bare body, which is less than a CloudEvent.
/// </summary>
internal sealed class RawRabbitMqTarget(string uri, bool cloudEventHeaders) : IBenchTarget
{
    private const int ConfirmWindow = 256;
    private const ushort Prefetch = 200;
    private IConnection? _publishConnection;
    private IConnection? _consumeConnection;
    private IChannel? _publish;
    private IChannel? _consume;
    private string _name = "";

    public string Name => cloudEventHeaders ? "raw RabbitMQ.Client" : "raw, body only";

    public async Task StartAsync(bool consume, Recorder recorder, CancellationToken cancellationToken)
    {
        var factory = new ConnectionFactory { Uri = new Uri(uri) };
        _publishConnection ??= await factory.CreateConnectionAsync("bench-raw-publish", cancellationToken);
        _consumeConnection ??= await factory.CreateConnectionAsync("bench-raw-consume", cancellationToken);
        _name = "bench-raw-" + Guid.NewGuid().ToString("N")[..8];
        _publish = await _publishConnection.CreateChannelAsync(new CreateChannelOptions(true, true, new ThrottlingRateLimiter(ConfirmWindow, throttlingPercentage: 0)), cancellationToken);
        await _publish.ExchangeDeclareAsync(_name, ExchangeType.Fanout, durable: true, cancellationToken: cancellationToken);
        await _publish.QueueDeclareAsync(_name, durable: true, exclusive: false, autoDelete: false,
            arguments: new Dictionary<string, object?> { ["x-queue-type"] = "quorum" }, cancellationToken: cancellationToken);
        await _publish.QueueBindAsync(_name, _name, "#", cancellationToken: cancellationToken);
        if (consume)
        {
            _consume = await _consumeConnection.CreateChannelAsync(cancellationToken: cancellationToken);
            await _consume.BasicQosAsync(0, Prefetch, false, cancellationToken);
            var consumer = new AsyncEventingBasicConsumer(_consume);
            var channel = _consume;
            consumer.ReceivedAsync += async (_, args) =>
            {
                recorder.OnReceived(args.Body.Span);
                await channel.BasicAckAsync(args.DeliveryTag, false);
            };
            await _consume.BasicConsumeAsync(_name, autoAck: false, consumer, cancellationToken);
        }
    }

    public async Task PublishManyAsync(int count, int size, CancellationToken cancellationToken)
    {
        var pending = new Queue<ValueTask>(ConfirmWindow);
        for (var i = 0; i < count; i++)
        {
            if (pending.Count >= ConfirmWindow)
            {
                await pending.Dequeue();
            }
            pending.Enqueue(PublishCore(Recorder.Payload(size), cancellationToken));
        }
        while (pending.Count > 0)
        {
            await pending.Dequeue();
        }
    }

    public Task PublishOneAsync(byte[] payload, CancellationToken cancellationToken) => PublishCore(payload, cancellationToken).AsTask();

    private ValueTask PublishCore(byte[] payload, CancellationToken cancellationToken)
    {
        var properties = new BasicProperties { Persistent = true, ContentType = "application/octet-stream" };
        if (cloudEventHeaders)
        {
            var id = Guid.NewGuid().ToString();
            properties.MessageId = id;
            properties.Headers = new Dictionary<string, object?>
            {
                ["cloudEvents_specversion"] = "1.0",
                ["cloudEvents_id"] = id,
                ["cloudEvents_source"] = "urn:bench",
                ["cloudEvents_type"] = "com.example.bench",
            };
        }
        return _publish!.BasicPublishAsync(_name, "com.example.bench", mandatory: false, properties, payload, cancellationToken);
    }

    public async Task StopAsync()
    {
        if (_consume is not null)
        {
            await _consume.CloseAsync();
            await _consume.DisposeAsync();
            _consume = null;
        }
        if (_publish is not null)
        {
            await _publish.QueueDeleteAsync(_name, false, false);
            await _publish.ExchangeDeleteAsync(_name, false);
            await _publish.CloseAsync();
            await _publish.DisposeAsync();
            _publish = null;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        if (_publishConnection is not null)
        {
            await _publishConnection.DisposeAsync();
        }
        if (_consumeConnection is not null)
        {
            await _consumeConnection.DisposeAsync();
        }
    }
}
