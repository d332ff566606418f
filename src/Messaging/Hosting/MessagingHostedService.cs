using Messaging.Handling;
using Messaging.Topology;
using Messaging.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Messaging.Hosting;

/// <summary>Provisions the topology and runs one consumer per subscription; stops them gracefully.</summary>
internal sealed partial class MessagingHostedService(
    IMessageTransport transport,
    MessagingModel model,
    IOptions<MessagingOptions> options,
    IServiceScopeFactory scopes,
    ILoggerFactory loggerFactory,
    TimeProvider time,
    ConsumerRegistry registry) : IHostedService
{
    private readonly ILogger _logger = loggerFactory.CreateLogger("Messaging");
    private readonly List<ITransportConsumer> _consumers = [];

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var settings = options.Value;
        var topology = model.BuildTopology(settings);
        foreach (var subscription in topology.Subscriptions)
        {
            if (subscription.Ordered && !transport.Capabilities.OrderingKeys)
            {
                throw new NotSupportedException(
                    $"Subscription '{subscription.Name}' asks for ordered delivery, but the {transport.Name} transport does not support ordering keys.");
            }
        }
        if (settings.Provisioning)
        {
            await transport.ProvisionAsync(topology, cancellationToken).ConfigureAwait(false);
            LogProvisioned(transport.Name, topology.Topics.Count, topology.Subscriptions.Count);
        }

        foreach (var subscription in topology.Subscriptions)
        {
            var model1 = model.Subscriptions[subscription.Name];
            foreach (var handler in model1.Handlers)
            {
                handler.ResolveEventType(model.FindEventType);
            }
            var processor = new SubscriptionProcessor(
                subscription,
                model1.Handlers,
                settings.Subscriptions[subscription.Name].UnhandledEvents,
                scopes,
                model.JsonOptions,
                _logger,
                transport.Name,
                time);
            var pipeline = new ReceivePipeline(subscription, processor.HandleAsync, _logger, time, transport.Name);
            _consumers.Add(pipeline);
            registry.Add(pipeline);
            await pipeline.StartAsync(transport, cancellationToken).ConfigureAwait(false);
            LogConsumerStarted(subscription.Name, subscription.Topic, transport.Name, subscription.Concurrency);
        }
        registry.MarkStarted();
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        registry.MarkStopping();
        // Graceful: each consumer stops taking new messages and waits for in-flight handlers.
        // If the host's shutdown timeout fires first, unsettled messages go back to the broker.
        await Task.WhenAll(_consumers.Select(c => c.StopAsync(cancellationToken))).ConfigureAwait(false);
        foreach (var consumer in _consumers)
        {
            await consumer.DisposeAsync().ConfigureAwait(false);
        }
        _consumers.Clear();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Provisioned {Topics} topic(s) and {Subscriptions} subscription(s) on {Transport}")]
    private partial void LogProvisioned(string transport, int topics, int subscriptions);

    [LoggerMessage(Level = LogLevel.Information, Message = "Consuming subscription {Subscription} of topic {Topic} on {Transport} with concurrency {Concurrency}")]
    private partial void LogConsumerStarted(string subscription, string topic, string transport, int concurrency);
}
