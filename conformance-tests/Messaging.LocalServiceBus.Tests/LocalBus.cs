using Azure.Messaging.ServiceBus;

namespace Messaging.LocalServiceBus.Tests;

/// <summary>One endpoint plus one SDK client per test, so tests never share entities or connections.</summary>
internal sealed class LocalBus : IAsyncDisposable
{
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(15);

    LocalBus(LocalServiceBusEndpoint endpoint, ServiceBusClient client, List<string> log)
    {
        Endpoint = endpoint;
        Client = client;
        Log = log;
    }

    public LocalServiceBusEndpoint Endpoint { get; }
    public ServiceBusClient Client { get; }
    /// <summary>What the endpoint reported (refused attaches, protocol errors): printed when a test fails to explain why.</summary>
    public List<string> Log { get; }

    public static async Task<LocalBus> StartAsync(Action<ServiceBusClientOptions>? configure = null)
    {
        var log = new List<string>();
        var endpoint = await LocalServiceBusEndpoint.StartAsync(new LocalServiceBusOptions
        {
            Log = line => { lock (log) { log.Add(line); } },
        }, TestContext.Current.CancellationToken);
        var options = new ServiceBusClientOptions
        {
            RetryOptions = new ServiceBusRetryOptions { MaxRetries = 3, Delay = TimeSpan.FromMilliseconds(200), MaxDelay = TimeSpan.FromSeconds(2), TryTimeout = TimeSpan.FromSeconds(10) },
        };
        configure?.Invoke(options);
        return new LocalBus(endpoint, new ServiceBusClient(endpoint.ConnectionString, options), log);
    }

    public async ValueTask DisposeAsync()
    {
        await Client.DisposeAsync();
        lock (Log)
        {
            foreach (var line in Log)
            {
                TestContext.Current.TestOutputHelper?.WriteLine(line);
            }
        }

        await Endpoint.DisposeAsync();
    }
}
