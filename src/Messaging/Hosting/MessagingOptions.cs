using Messaging.Handling;
using Messaging.Policy;

namespace Messaging.Hosting;

/// <summary>Settings bound from the <c>Messaging</c> configuration section.</summary>
public sealed class MessagingOptions
{
    /// <summary>The configuration section name.</summary>
    public const string SectionName = "Messaging";

    /// <summary>The <c>source</c> of published events when <see cref="Source"/> is not set.</summary>
    public const string DefaultSource = "urn:messaging:unknown-source";

    /// <summary>Which transport to use: <c>InMemory</c> (default), <c>RabbitMQ</c>, ... (any registered transport name).</summary>
    public string Transport { get; set; } = InMemory.InMemoryTransport.TransportName;

    /// <summary>Create topics, subscriptions and dead-letter destinations at start-up (idempotent). Turn off for pre-provisioned brokers.</summary>
    public bool Provisioning { get; set; } = true;

    /// <summary>The CloudEvents <c>source</c> of events this service publishes (a URI reference).</summary>
    public string? Source { get; set; }

    /// <summary>
    /// The longest one publish call waits for the broker to accept its events, on every transport: a broker that blocks
    /// publishers (RabbitMQ's memory alarm), throttles (503, server busy) or stops answering makes <c>PublishAsync</c> throw
    /// an <see cref="Publishing.EventPublishException"/> with <c>IsTransient</c> set once it has passed, instead of hanging.
    /// The broker client's own retries happen inside it. Default 30 s.
    /// </summary>
    public TimeSpan PublishTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Per-subscription policy, keyed by subscription name; values here override those set in code.</summary>
    public Dictionary<string, SubscriptionOptions> Subscriptions { get; } = new(StringComparer.Ordinal);

    /// <summary>Metrics settings (<c>Messaging:Metrics</c>).</summary>
    public MessagingMetricsOptions Metrics { get; } = new();
}

/// <summary>Settings of the library's metrics (<c>Messaging:Metrics</c>).</summary>
public sealed class MessagingMetricsOptions
{
    /// <summary>The default of <see cref="BacklogPollingInterval"/>.</summary>
    public static readonly TimeSpan DefaultBacklogPollingInterval = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Whether the backlog gauges (<c>messaging.subscription.backlog</c>, <c>.dead_letters</c>, <c>.oldest_message.age</c>)
    /// are reported; when on, the broker is asked for them every <see cref="BacklogPollingInterval"/>. Default on.
    /// </summary>
    public bool Backlog { get; set; } = true;

    /// <summary>
    /// How often the backlog of every consumed subscription is read from the broker; the gauges report the last values
    /// read. <see cref="TimeSpan.Zero"/> turns the backlog gauges off. Otherwise at least 100 ms and at most one day. Default 30 s.
    /// </summary>
    public TimeSpan BacklogPollingInterval { get; set; } = DefaultBacklogPollingInterval;

    internal bool BacklogEnabled => Backlog && BacklogPollingInterval > TimeSpan.Zero;
}

/// <summary>Policy of one subscription.</summary>
public sealed class SubscriptionOptions
{
    /// <summary>The topic the subscription receives from.</summary>
    public string? Topic { get; set; }

    /// <summary>Delivery attempts before the event is dead-lettered (1 = no retry).</summary>
    public int MaxAttempts { get; set; } = 5;

    /// <summary>Immediate, Fixed or Exponential.</summary>
    public BackoffKind Backoff { get; set; } = BackoffKind.Exponential;

    /// <summary>The fixed delay, or the first delay of an exponential backoff.</summary>
    public TimeSpan BackoffDelay { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>The cap of an exponential backoff.</summary>
    public TimeSpan MaxBackoffDelay { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>Growth factor of an exponential backoff.</summary>
    public double BackoffMultiplier { get; set; } = 2;

    /// <summary>Most handlers running at once for this subscription in this process.</summary>
    public int Concurrency { get; set; } = 8;

    /// <summary>
    /// Most messages the broker pushes ahead of the handlers. 200 keeps a RabbitMQ consumer busy while the same queue
    /// takes publishes (measured: end-to-end 0.9 of the raw client at 200 against 0.65 at 64); lower it when handlers
    /// are slow and work should spread evenly over many consumers.
    /// </summary>
    public int Prefetch { get; set; } = 200;

    /// <summary>Handle events with the same <c>partitionkey</c> in publish order (transports that declare ordering only).</summary>
    public bool Ordered { get; set; }

    /// <summary>What to do with an event no handler of the subscription accepts.</summary>
    public UnhandledEventAction UnhandledEvents { get; set; } = UnhandledEventAction.Complete;

    internal RetryPolicy ToRetryPolicy() => new(MaxAttempts, Backoff switch
    {
        BackoffKind.Immediate => Policy.Backoff.Immediate,
        BackoffKind.Fixed => Policy.Backoff.Fixed(BackoffDelay),
        _ => Policy.Backoff.Exponential(BackoffDelay, MaxBackoffDelay, BackoffMultiplier),
    });
}
