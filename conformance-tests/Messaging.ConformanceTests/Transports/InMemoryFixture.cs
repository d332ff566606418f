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

    /// <summary>The in-memory broker lives in this process: no other process reaches it.</summary>
    public IReadOnlyDictionary<string, string?>? ProcessSettings => null;

    public void Configure(IServiceCollection services, MessagingBuilder messaging)
    {
        services.AddSingleton(_broker);
        messaging.UseTransport(InMemoryTransport.TransportName);
    }

    /// <summary>The in-memory broker is shared by every host of a fixture; its default limit (10) is kept, and crashes are instant.</summary>
    public IDictionary<string, string?> CrashLimitSettings { get; } = new Dictionary<string, string?>();

    /// <summary>In-memory deliveries have no lease: a message stays with its consumer until settled or the consumer goes.</summary>
    public void UseLongLeases(IServiceCollection services)
    {
    }

    public string BinaryAttributeName(string attribute) => attribute;

    public Task PublishRawAsync(string topic, IReadOnlyDictionary<string, string> headers, byte[] body, string? contentType, CancellationToken cancellationToken) =>
        _broker.PublishRawAsync(topic, headers, body, contentType, cancellationToken);

    public async Task<string?> PublishRawAsync(string topic, RawMessage message, CancellationToken cancellationToken)
    {
        if (CannotCarry(message) is { } reason)
        {
            throw new NotSupportedException(reason);
        }
        var properties = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in message.Headers)
        {
            properties[key] = RawValues.AsText(value, out _)!;
        }
        await _broker.PublishRawAsync(topic, properties, message.Body, message.ContentType, cancellationToken);
        return null; // the broker gives each stored copy its own id and does not hand it back
    }

    public string? CannotCarry(RawMessage message) => RawValues.NotAllText(message, "the in-memory broker's properties are strings");

    /// <summary>Properties are strings only: the fixture sends bytes as their base64 text.</summary>
    public string BinaryAttributeText(byte[] value) => Convert.ToBase64String(value);

    public string? PriorAttemptsHeader => null;

    public Task RestartBrokerAsync(CancellationToken cancellationToken) =>
        throw new NotSupportedException("The in-memory broker lives in the process; it cannot restart without losing everything, by design.");

    public bool CanInjectFaults => true;

    public bool BrokenConsumersStayBroken => false;

    public Task<IAsyncDisposable> BlockPublishesAsync(CancellationToken cancellationToken) => Task.FromResult(Fault.Until(_broker.BlockPublishers()));

    public Task<IAsyncDisposable> BreakConsumersAsync(string topic, string subscription, CancellationToken cancellationToken) =>
        throw new NotSupportedException("The in-memory transport has no connection to break; its capabilities say so.");

    public Task ExpireLeasesAsync(string topic, string subscription, CancellationToken cancellationToken) =>
        throw new NotSupportedException("The in-memory broker has no leases; its capabilities say so.");

    public Task DeleteSubscriptionAsync(string topic, string subscription) => Task.CompletedTask;

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
