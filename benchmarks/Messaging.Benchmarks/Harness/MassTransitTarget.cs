using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using RabbitMQ.Client;

namespace Messaging.Benchmarks.Harness;

public sealed record BenchMessage(byte[] Payload);

/// <summary>
/// MassTransit 8.5.12 on the same broker: quorum queue, publisher confirms (MassTransit's default), prefetch 200
/// and 8 messages handled at once (this library's defaults), and MassTransit's default JSON serializer.
/// </summary>
/// <remarks>
/// MassTransit's own default concurrency is the prefetch count (200); measured here it ran end to end 10 to 20%
/// slower than with 8, so the comparable setting is also the kinder one.
/// </remarks>
internal sealed class MassTransitTarget(string uri) : IBenchTarget
{
    private const int Window = 256;
    private const int Concurrency = 8;
    private IHost? _host;
    private IBus? _bus;
    private string _queue = "";

    public string Name => "MassTransit 8.5.12";

    public async Task StartAsync(bool consume, Recorder recorder, CancellationToken cancellationToken)
    {
        _queue = "bench-mt-" + Guid.NewGuid().ToString("N")[..8];
        var brokerUri = new Uri(uri);
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddSingleton(recorder);
        // Start returns only once the receive endpoint (and its bindings) exist, as with the other targets.
        builder.Services.Configure<MassTransitHostOptions>(o => o.WaitUntilStarted = true);
        builder.Services.AddMassTransit(x =>
        {
            if (consume)
            {
                x.AddConsumer<BenchConsumer>();
            }
            x.UsingRabbitMq((context, cfg) =>
            {
                cfg.Host(brokerUri.Host, (ushort)brokerUri.Port, "/", h =>
                {
                    h.Username("guest");
                    h.Password("guest");
                    h.PublisherConfirmation = true;
                });
                if (consume)
                {
                    cfg.ReceiveEndpoint(_queue, e =>
                    {
                        e.SetQuorumQueue();
                        e.PrefetchCount = 200;
                        e.ConcurrentMessageLimit = Concurrency;
                        e.ConfigureConsumer<BenchConsumer>(context);
                    });
                }
            });
        });
        _host = builder.Build();
        await _host.StartAsync(cancellationToken);
        _bus = _host.Services.GetRequiredService<IBus>();
        if (!consume)
        {
            // Publish-only: a durable quorum queue bound to MassTransit's message exchange stores what is published.
            await using var connection = await new ConnectionFactory { Uri = brokerUri }.CreateConnectionAsync(cancellationToken);
            await using var channel = await connection.CreateChannelAsync(cancellationToken: cancellationToken);
            var exchange = $"{typeof(BenchMessage).Namespace}:{nameof(BenchMessage)}";
            await channel.ExchangeDeclareAsync(exchange, ExchangeType.Fanout, durable: true, cancellationToken: cancellationToken);
            await channel.QueueDeclareAsync(_queue, true, false, false, new Dictionary<string, object?> { ["x-queue-type"] = "quorum" }, cancellationToken: cancellationToken);
            await channel.QueueBindAsync(_queue, exchange, "", cancellationToken: cancellationToken);
        }
    }

    public async Task PublishManyAsync(int count, int size, CancellationToken cancellationToken)
    {
        var pending = new Queue<Task>(Window);
        for (var i = 0; i < count; i++)
        {
            if (pending.Count >= Window)
            {
                await pending.Dequeue();
            }
            pending.Enqueue(_bus!.Publish(new BenchMessage(Recorder.Payload(size)), cancellationToken));
        }
        await Task.WhenAll(pending);
    }

    public Task PublishOneAsync(byte[] payload, CancellationToken cancellationToken) => _bus!.Publish(new BenchMessage(payload), cancellationToken);

    public async Task StopAsync()
    {
        if (_host is null)
        {
            return;
        }
        await _host.StopAsync();
        _host.Dispose();
        _host = null;
        await using var connection = await new ConnectionFactory { Uri = new Uri(uri) }.CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        await channel.QueueDeleteAsync(_queue, false, false);
        await channel.ExchangeDeleteAsync(_queue, false);
    }

    public ValueTask DisposeAsync() => new(StopAsync());

    private sealed class BenchConsumer(Recorder recorder) : IConsumer<BenchMessage>
    {
        public Task Consume(ConsumeContext<BenchMessage> context)
        {
            recorder.OnReceived(context.Message.Payload);
            return Task.CompletedTask;
        }
    }
}
