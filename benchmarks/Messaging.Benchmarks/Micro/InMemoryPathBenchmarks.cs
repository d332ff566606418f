using BenchmarkDotNet.Attributes;
using CloudNative.CloudEvents;
using Messaging.Handling;
using Messaging.Hosting;
using Messaging.Publishing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Messaging.Benchmarks.Micro;

/// <summary>
/// The in-memory transport's whole publish path and whole round trip, as an application sees them: a 1 KB CloudEvent
/// through <see cref="IEventPublisher"/>, and on to a handler of a running host. The allocations are this process's,
/// every thread's: the receive path is the round trip minus the publish.
/// </summary>
[MemoryDiagnoser]
public class InMemoryPathBenchmarks
{
    private readonly byte[] _payload = new byte[1024];
    private IHost _host = null!;
    private IEventPublisher _publisher = null!;
    private Signal _signal = null!;

    [GlobalSetup]
    public async Task SetupAsync()
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddSingleton<Signal>();
        builder.Services.AddMessaging(builder.Configuration)
            .AddTopic("bench-unsubscribed")
            .AddSubscription("bench-sub", "bench", s => s.HandleCloudEvents<SignallingHandler>());
        _host = builder.Build();
        await _host.StartAsync();
        _publisher = _host.Services.GetRequiredService<IEventPublisher>();
        _signal = _host.Services.GetRequiredService<Signal>();
    }

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        await _host.StopAsync();
        _host.Dispose();
    }

    private CloudEvent Event() => CloudEventSdkBenchmarks.Build("bench-1", _payload);

    /// <summary>Publish to a topic no subscription receives: validation, encoding, the publish deadline, nothing queued.</summary>
    [Benchmark]
    public Task Publish() => _publisher.PublishAsync("bench-unsubscribed", Event());

    /// <summary>Publish, and wait until the subscription's handler ran (it settles the event meanwhile).</summary>
    [Benchmark]
    public async Task PublishAndHandle()
    {
        var handled = _signal.Next();
        await _publisher.PublishAsync("bench", Event());
        await handled;
    }

    private sealed class Signal
    {
        private TaskCompletionSource _next = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task Next()
        {
            _next = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _next.Task;
        }

        public void Set() => _next.TrySetResult();
    }

    private sealed class SignallingHandler(Signal signal) : ICloudEventHandler
    {
        public Task HandleAsync(EventContext context, CancellationToken cancellationToken)
        {
            signal.Set();
            return Task.CompletedTask;
        }
    }
}
