using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Topology;

namespace Messaging.Transport;

/// <summary>
/// The narrow contract a broker adapter implements. Everything else (typed publish, handler dispatch,
/// retry and dead-letter decisions, tracing, hosting) lives in the contract layer and is the same for
/// every broker. A transport moves bytes and settles deliveries; it never decides policy.
/// </summary>
public interface IMessageTransport : IAsyncDisposable
{
    /// <summary>The name used in configuration (<c>Messaging:Transport</c>).</summary>
    string Name { get; }

    /// <summary>What the broker can do; the contract layer refuses what is not declared here.</summary>
    TransportCapabilities Capabilities { get; }

    /// <summary>Creates topics, subscriptions and dead-letter destinations; must be idempotent.</summary>
    Task ProvisionAsync(MessagingTopology topology, CancellationToken cancellationToken);

    /// <summary>
    /// Publishes events (their data already normalised to bytes) to a topic. Completes only once the broker
    /// has durably accepted every event; throws if any was refused.
    /// </summary>
    Task PublishAsync(string topic, IReadOnlyList<CloudEvent> events, CancellationToken cancellationToken);

    /// <summary>
    /// Starts receiving <see cref="ReceivePipeline.Subscription"/>: the returned receiver submits every message it takes from
    /// the broker to <paramref name="pipeline"/>, which handles and settles it.
    /// </summary>
    Task<ITransportReceiver> StartReceiverAsync(ReceivePipeline pipeline, CancellationToken cancellationToken);

    /// <summary>
    /// Whether a failure of <see cref="PublishAsync"/> may succeed when tried again: the broker was unreachable, restarting,
    /// throttling or blocking publishers, or did not confirm in time. It sets <see cref="Publishing.EventPublishException.IsTransient"/>.
    /// </summary>
    bool IsTransient(Exception exception) => exception is TimeoutException or IOException or System.Net.Sockets.SocketException or System.Net.Http.HttpRequestException;

    /// <summary>Reads and replays a subscription's dead-letter destination.</summary>
    IDeadLetterStore DeadLetters { get; }

    /// <summary>
    /// Checks, cheaply, that the broker can be reached: the state of the transport's connections, or one small call with a
    /// short deadline. Called by the broker health check (<c>AddMessagingHealthChecks</c>), which bounds it with its own
    /// timeout and reports an exception as unhealthy. By default healthy, for a transport with nothing to check.
    /// </summary>
    Task<TransportHealth> CheckHealthAsync(CancellationToken cancellationToken) =>
        Task.FromResult(TransportHealth.Healthy($"The {Name} transport has no connection to check."));

    /// <summary>
    /// Reads how much work <paramref name="subscription"/> holds at the broker, for the backlog gauges
    /// (<c>messaging.subscription.*</c>). Called by the backlog poller every <c>Messaging:Metrics:BacklogPollingInterval</c>,
    /// never from a gauge callback. Returns null when the transport can report nothing; a value the broker cannot give is
    /// null in the result. By default only the dead letters are reported, as <see cref="DeadLetters"/> counts them.
    /// </summary>
    async Task<SubscriptionBacklog?> GetBacklogAsync(SubscriptionDefinition subscription, CancellationToken cancellationToken) =>
        new(Waiting: null, await SubscriptionBacklog.CountDeadLettersAsync(this, subscription, cancellationToken).ConfigureAwait(false), OldestAge: null);
}

/// <summary>Invoked by the receive pipeline for every message it hands to the handlers.</summary>
internal delegate Task DeliveryCallback(ITransportDelivery delivery, CancellationToken cancellationToken);

/// <summary>A running consumer of one subscription (the <see cref="ReceivePipeline"/>).</summary>
public interface ITransportConsumer : IAsyncDisposable
{
    /// <summary>
    /// Stops receiving new messages and waits for in-flight deliveries to be settled. If
    /// <paramref name="cancellationToken"/> fires first, unsettled deliveries are returned to the broker.
    /// </summary>
    Task StopAsync(CancellationToken cancellationToken);
}
