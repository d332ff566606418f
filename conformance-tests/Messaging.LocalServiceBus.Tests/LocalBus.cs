using Azure.Messaging.ServiceBus;

namespace Messaging.LocalServiceBus.Tests;

/// <summary>One endpoint plus one SDK client per test, so tests never share entities or connections.</summary>
internal sealed class LocalBus : IAsyncDisposable
{
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(15);

    LocalBus(LocalServiceBusEndpoint endpoint, ServiceBusClient client)
    {
        Endpoint = endpoint;
        Client = client;
    }

    public LocalServiceBusEndpoint Endpoint { get; }
    public ServiceBusClient Client { get; }
    public List<string> Log { get; } = [];

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
        var bus = new LocalBus(endpoint, new ServiceBusClient(endpoint.ConnectionString, options));
        bus.Log.AddRange(log);
        return bus;
    }

    public async ValueTask DisposeAsync()
    {
        await Client.DisposeAsync();
        await Endpoint.DisposeAsync();
    }
}
