using CloudNative.CloudEvents;
using Messaging.Handling;
using Messaging.Hosting;
using Messaging.Publishing;
using Messaging.Topology;
using Messaging.Transport;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Messaging.Benchmarks.Harness;

/// <summary>This library on a given transport, with its default settings (no benchmark-only tuning).</summary>
internal sealed class LibraryTarget(string transport, Action<MessagingBuilder> addTransport, Func<string, Task> cleanup, IDictionary<string, string?>? settings = null, int window = 256) : IBenchTarget
{
    private int Window => window;

    private IHost? _host;
    private IEventPublisher? _publisher;
    private int _published;

    /// <summary>
    /// "--set Bench:Keys=N" gives the events N ordering keys (<c>partitionkey</c> key-0 ... key-(N-1), in turn), for
    /// measuring an ordered subscription ("--set Subscription:Ordered=true") against an unordered one.
    /// </summary>
    private readonly int _keys = settings is not null && settings.TryGetValue("Bench:Keys", out var keys) && int.TryParse(keys, out var n) ? n : 0;
    private string _topic = "";
    private string _subscription = "";

    public string Name => "this library";

    public async Task StartAsync(bool consume, Recorder recorder, CancellationToken cancellationToken)
    {
        var id = Guid.NewGuid().ToString("N")[..8];
        _topic = $"bench-{id}";
        _subscription = $"bench-{id}-sub";
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        // Settings named "Subscription:X" apply to this measurement's subscription (its name is generated).
        builder.Configuration.AddInMemoryCollection((settings ?? new Dictionary<string, string?>())
            .Where(kv => consume || !kv.Key.StartsWith("Subscription:", StringComparison.Ordinal)).ToDictionary(
            kv => kv.Key.StartsWith("Subscription:", StringComparison.Ordinal) ? $"Messaging:Subscriptions:{_subscription}:{kv.Key["Subscription:".Length..]}" : kv.Key,
            kv => kv.Value));
        builder.Services.AddSingleton(recorder);
        var messaging = builder.Services.AddMessaging(builder.Configuration);
        addTransport(messaging);
        messaging.UseTransport(transport).AddTopic(_topic);
        if (consume)
        {
            messaging.AddSubscription(_subscription, _topic, s => s.HandleCloudEvents<RecordingHandler>());
        }
        _host = builder.Build();
        await _host.StartAsync(cancellationToken);
        if (!consume)
        {
            // Publish-only: the subscription exists (events are stored durably) but nobody consumes it.
            var transportInstance = _host.Services.GetRequiredService<IMessageTransport>();
            await transportInstance.ProvisionAsync(new MessagingTopology([_topic], [new SubscriptionDefinition { Name = _subscription, Topic = _topic }]), cancellationToken);
        }
        _publisher = _host.Services.GetRequiredService<IEventPublisher>();
    }

    // One parsed source for every event, as a service keeps its own (the raw clients send a constant string).
    private static readonly Uri Source = new("urn:bench");

    private CloudEvent Event(byte[] payload)
    {
        var cloudEvent = new CloudEvent
        {
            Id = Guid.NewGuid().ToString(),
            Source = Source,
            Type = "com.example.bench",
            DataContentType = "application/octet-stream",
            Data = payload,
        };
        if (_keys > 0)
        {
            cloudEvent["partitionkey"] = KeyNames[Interlocked.Increment(ref _published) % _keys];
        }
        return cloudEvent;
    }

    private string[] KeyNames => _keyNames ??= Enumerable.Range(0, Math.Max(1, _keys)).Select(i => $"key-{i}").ToArray();

    private string[]? _keyNames;

    /// <summary>
    /// One event per call, at most <see cref="Window"/> calls awaiting their confirms, as the raw client and MassTransit
    /// publish: it is how services publish, and nothing is built ahead of time.
    /// </summary>
    public async Task PublishManyAsync(int count, int size, CancellationToken cancellationToken)
    {
        var pending = new Queue<Task>(Window);
        for (var i = 0; i < count; i++)
        {
            if (pending.Count >= Window)
            {
                await pending.Dequeue();
            }
            pending.Enqueue(_publisher!.PublishAsync(_topic, Event(Recorder.Payload(size)), cancellationToken));
        }
        await Task.WhenAll(pending);
    }

    public Task PublishOneAsync(byte[] payload, CancellationToken cancellationToken) => _publisher!.PublishAsync(_topic, Event(payload), cancellationToken);

    public async Task StopAsync()
    {
        if (_host is not null)
        {
            await _host.StopAsync();
            _host.Dispose();
            _host = null;
            await cleanup(_topic);
        }
    }

    public ValueTask DisposeAsync() => new(StopAsync());

    private sealed class RecordingHandler(Recorder recorder) : ICloudEventHandler
    {
        public Task HandleAsync(EventContext context, CancellationToken cancellationToken)
        {
            recorder.OnReceived(context.Event.Data is byte[] data ? data : []);
            return Task.CompletedTask;
        }
    }
}
