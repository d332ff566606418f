using CloudNative.CloudEvents;
namespace Messaging.PubSub;

/// <summary>Settings of the Google Cloud Pub/Sub transport (<c>Messaging:PubSub</c>).</summary>
public sealed class PubSubTransportOptions
{
    /// <summary>The configuration section these options are bound from.</summary>
    public const string SectionName = "Messaging:PubSub";

    /// <summary>The largest message Pub/Sub accepts (data plus attributes plus ordering key), in bytes.</summary>
    public const int BrokerMaxMessageBytes = 10_000_000;

    /// <summary>Pub/Sub's longest message retention of a subscription.</summary>
    public static readonly TimeSpan MaxDeadLetterRetention = TimeSpan.FromDays(7);

    /// <summary>Pub/Sub's shortest message retention of a subscription.</summary>
    public static readonly TimeSpan MinDeadLetterRetention = TimeSpan.FromMinutes(10);

    /// <summary>The Google Cloud project that owns the topics and subscriptions. Required.</summary>
    public string? ProjectId { get; set; }

    /// <summary>
    /// <c>host:port</c> of a Pub/Sub emulator (plaintext, no credentials). When empty, the <c>PUBSUB_EMULATOR_HOST</c>
    /// environment variable is used, as Google's own clients do; when both are empty, <see cref="Endpoint"/> is used.
    /// </summary>
    public string? EmulatorHost { get; set; }

    /// <summary>
    /// The service endpoint when no emulator is configured; defaults to <c>https://pubsub.googleapis.com</c>.
    /// Use a regional endpoint (for example <c>https://europe-west1-pubsub.googleapis.com</c>) to keep ordered
    /// publishing in one region. Calls are authenticated with Application Default Credentials.
    /// </summary>
    public string? Endpoint { get; set; }

    /// <summary>Binary (the default, Google's <c>ce-</c> attribute convention) or structured JSON.</summary>
    public ContentMode ContentMode { get; set; } = ContentMode.Binary;

    /// <summary>Most messages in one publish request (Pub/Sub allows 1000).</summary>
    public int MaxBatchCount { get; set; } = 100;

    /// <summary>Most bytes in one publish request; a single larger event is still sent, alone.</summary>
    public int MaxBatchBytes { get; set; } = 1_000_000;

    /// <summary>
    /// How long a publish may wait for other events to share its request. Zero (the default) sends at once; events
    /// published while a request is in flight are still grouped into the next one.
    /// </summary>
    public TimeSpan MaxBatchDelay { get; set; } = TimeSpan.Zero;

    /// <summary>
    /// Most events this process holds per topic for publishing: queued, or in a request Pub/Sub has not answered yet
    /// (dead letters included). A publish that does not fit waits, in publish order and honouring its cancellation token,
    /// until earlier ones are answered, instead of growing memory without bound; a single publish of more events is sent
    /// on its own once nothing else is held.
    /// </summary>
    public int MaxQueuedEvents { get; set; } = 10_000;

    /// <summary>
    /// Most bytes of events (as encoded) this process holds per topic for publishing; see <see cref="MaxQueuedEvents"/>.
    /// A single larger publish is sent on its own once nothing else is held.
    /// </summary>
    public long MaxQueuedBytes { get; set; } = 100L * 1024 * 1024;

    /// <summary>
    /// Most messages the broker may hand one consumer before it settles some (server-side flow control).
    /// Zero derives it from the subscription: <c>Concurrency + Prefetch</c>.
    /// </summary>
    public int MaxOutstandingMessages { get; set; }

    /// <summary>Most bytes of messages the broker may hand one consumer before it settles some.</summary>
    public long MaxOutstandingBytes { get; set; } = 100L * 1024 * 1024;

    /// <summary>
    /// The ack deadline of the subscriptions and of every lease; extended automatically while a handler runs.
    /// Between 10 seconds and 10 minutes.
    /// </summary>
    public TimeSpan AckDeadline { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// The subscription's dead-letter policy allows <c>MaxAttempts</c> + this many deliveries (5 to 100, as Pub/Sub allows):
    /// the broker dead-letters a message by itself only when consumers keep crashing on it or giving it back, because a message
    /// received but not yet handled when its consumer dies also counts as a delivery. 0 to 95.
    /// </summary>
    public int CrashRedeliveryAllowance { get; set; } = 5;

    /// <summary>
    /// The largest event accepted, in bytes as encoded on the wire (data plus attributes plus ordering key).
    /// Pub/Sub's own limit is 10 MB per message and per request; the default leaves room for the request envelope.
    /// </summary>
    public int MaxEventSizeBytes { get; set; } = BrokerMaxMessageBytes - (64 * 1024);

    /// <summary>
    /// How long a dead letter is kept: the message retention of each <c>{name}.dead-letter</c> subscription the transport
    /// creates. Pub/Sub allows 10 minutes to 7 days (the default, its maximum); a dead letter left unread longer is deleted
    /// by Pub/Sub. The dead-letter subscriptions never expire, however long nobody reads them.
    /// </summary>
    public TimeSpan DeadLetterRetention { get; set; } = MaxDeadLetterRetention;

    /// <summary>The emulator host in effect: <see cref="EmulatorHost"/>, else <c>PUBSUB_EMULATOR_HOST</c>, else <c>null</c>.</summary>
    public string? ResolveEmulatorHost()
    {
        if (!string.IsNullOrWhiteSpace(EmulatorHost))
        {
            return EmulatorHost.Trim();
        }
        var fromEnvironment = Environment.GetEnvironmentVariable("PUBSUB_EMULATOR_HOST");
        return string.IsNullOrWhiteSpace(fromEnvironment) ? null : fromEnvironment.Trim();
    }

}
