using Messaging.ConformanceTests.Infrastructure;
using Messaging.Hosting;
using Messaging.InMemory;
using Microsoft.Extensions.DependencyInjection;

namespace Messaging.ConformanceTests.Transports;

/// <summary>The embedded transport. One broker per fixture, shared by every host of a test (competing consumers, crash).</summary>
public sealed class InMemoryFixture : ITransportFixture
{
    private readonly InMemoryBroker _broker = new();

    public string TransportName => InMemoryTransport.TransportName;

    public string? UnavailableReason => null;

    public bool CanRestartBroker => false;

    public void Configure(IServiceCollection services, MessagingBuilder messaging)
    {
        services.AddSingleton(_broker);
        messaging.UseTransport(InMemoryTransport.TransportName);
    }

    public string BinaryAttributeName(string attribute) => attribute;

    public Task PublishRawAsync(string topic, IReadOnlyDictionary<string, string> headers, byte[] body, string? contentType, CancellationToken cancellationToken) =>
        _broker.PublishRawAsync(topic, headers, body, contentType, cancellationToken);

    public Task RestartBrokerAsync(CancellationToken cancellationToken) =>
        throw new NotSupportedException("The in-memory broker lives in the process; it cannot restart without losing everything, by design.");

    public Task DeleteSubscriptionAsync(string topic, string subscription) => Task.CompletedTask;

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
