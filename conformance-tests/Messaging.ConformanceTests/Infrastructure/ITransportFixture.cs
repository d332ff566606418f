using Messaging.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Messaging.ConformanceTests.Infrastructure;

/// <summary>
/// Everything the shared suite needs to know about one transport. Endpoints come from environment variables so
/// the same suite runs against any broker a user points it at.
/// </summary>
public interface ITransportFixture : IAsyncDisposable
{
    /// <summary>The transport name as used in configuration and in the ledger.</summary>
    string TransportName { get; }

    /// <summary>Null when the broker answered; otherwise why it is unavailable (skips on a laptop, fails when required).</summary>
    string? UnavailableReason { get; }

    /// <summary>Registers and selects the transport in a host under test.</summary>
    void Configure(IServiceCollection services, MessagingBuilder messaging);

    /// <summary>The header/attribute name under which this transport's binary mode carries CloudEvent attribute <paramref name="attribute"/>.</summary>
    string BinaryAttributeName(string attribute);

    /// <summary>Sends a raw message to a topic with the broker's own client, as a foreign or broken producer would.</summary>
    Task PublishRawAsync(string topic, IReadOnlyDictionary<string, string> headers, byte[] body, string? contentType, CancellationToken cancellationToken);

    /// <summary>True when the suite can restart the broker (a local broker it controls).</summary>
    bool CanRestartBroker { get; }

    /// <summary>Stops and starts the broker.</summary>
    Task RestartBrokerAsync(CancellationToken cancellationToken);

    /// <summary>Removes what a test created, best effort.</summary>
    Task DeleteSubscriptionAsync(string topic, string subscription);
}
