using BenchmarkDotNet.Attributes;
using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Handling;
using Messaging.Topology;
using Messaging.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace Messaging.Benchmarks.Micro;

/// <summary>Per-event cost of the contract layer between a transport's delivery and the handler: routing, DI scope, settlement.</summary>
[MemoryDiagnoser]
public class DispatchBenchmarks
{
    private SubscriptionProcessor _processor = null!;
    private BenchDelivery _delivery = null!;

    [GlobalSetup]
    public void Setup()
    {
        var services = new ServiceCollection();
        services.AddTransient<NoopHandler>(); // as HandleCloudEvents registers it
        var provider = services.BuildServiceProvider();
        var subscription = new SubscriptionDefinition { Name = "bench-sub", Topic = "bench" };
        _processor = new SubscriptionProcessor(subscription, [HandlerRegistration.Raw<NoopHandler>("com.example.bench")], UnhandledEventAction.Complete,
            provider.GetRequiredService<IServiceScopeFactory>(), new System.Text.Json.JsonSerializerOptions(), NullLogger.Instance, "bench", TimeProvider.System);
        _delivery = new BenchDelivery(new CloudEvent
        {
            Id = "1",
            Source = new Uri("urn:bench"),
            Type = "com.example.bench",
            Data = new byte[1024],
            DataContentType = "application/octet-stream",
        });
    }

    [Benchmark]
    public Task DispatchToRawHandler() => _processor.HandleAsync(_delivery, CancellationToken.None);

    private sealed class NoopHandler : ICloudEventHandler
    {
        public Task HandleAsync(EventContext context, CancellationToken cancellationToken) => Task.CompletedTask;
    }

    private sealed class BenchDelivery(CloudEvent cloudEvent) : ITransportDelivery
    {
        public CloudEvent? Event => cloudEvent;

        public string? DecodeError => null;

        public int Attempt => 1;

        public string Subscription => "bench-sub";

        public string? MessageId => "1";

        public bool RetriesInPlace => false;

        public CancellationToken StopRequested => CancellationToken.None;

        public Task GiveBackAsync() => Task.CompletedTask;

        public Task CompleteAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task RetryAsync(TimeSpan delay, CancellationToken cancellationToken) => Task.CompletedTask;

        public Task DeadLetterAsync(DeadLetterMetadata metadata, CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
