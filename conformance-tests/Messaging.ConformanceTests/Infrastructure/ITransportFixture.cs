using Messaging.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Messaging.ConformanceTests.Infrastructure;

/// <summary>
/// Everything the shared suite needs to know about one transport. Endpoints come from environment variables so
/// the same suite runs against any broker a user points it at.
/// </summary>
public interface ITransportFixture : IAsyncDisposable
{
    /// <summary>The lease <see cref="UseLongLeases"/> gives: renewed every 10 s, so only a stall of about 20 s lets it run out.</summary>
    public static readonly TimeSpan LongLease = TimeSpan.FromSeconds(30);

    /// <summary>The transport name as used in configuration and in the ledger.</summary>
    string TransportName { get; }

    /// <summary>Null when the broker answered; otherwise why it is unavailable (skips on a laptop, fails when required).</summary>
    string? UnavailableReason { get; }

    /// <summary>
    /// The configuration (keys of the <c>Messaging</c> section and values) with which a separate process, such as the
    /// <c>messaging</c> command-line tool, reaches the same broker as the hosts of <see cref="Configure"/>: <c>Messaging:Transport</c>
    /// and the transport's own settings. <c>null</c> where no other process can reach it (the in-memory broker lives in this one).
    /// </summary>
    IReadOnlyDictionary<string, string?>? ProcessSettings { get; }

    /// <summary>Registers and selects the transport in a host under test.</summary>
    void Configure(IServiceCollection services, MessagingBuilder messaging);

    /// <summary>The header/attribute name under which this transport's binary mode carries CloudEvent attribute <paramref name="attribute"/>.</summary>
    string BinaryAttributeName(string attribute);

    /// <summary>Sends a raw message to a topic with the broker's own client, as a foreign or broken producer would.</summary>
    Task PublishRawAsync(string topic, IReadOnlyDictionary<string, string> headers, byte[] body, string? contentType, CancellationToken cancellationToken);

    /// <summary>
    /// Sends a raw message whose header values are typed, with the broker's own client, as a foreign producer would; each
    /// fixture maps the values to its wire types (see <see cref="RawMessage"/>). Returns the broker-level message id the
    /// consumer will see (and log), when the producer can know it: set by the producer (RabbitMQ, Service Bus) or returned by
    /// the broker (Pub/Sub); <c>null</c> where the broker assigns another id on the way (SNS to SQS) or none is visible (in-memory).
    /// Throws <see cref="NotSupportedException"/> for a message <see cref="CannotCarry"/> refuses.
    /// </summary>
    Task<string?> PublishRawAsync(string topic, RawMessage message, CancellationToken cancellationToken);

    /// <summary>
    /// Why this broker (or its own client) cannot physically carry <paramref name="message"/> as given (a header value type
    /// it has no wire type for, bytes that are not UTF-8 where the wire only has Unicode strings, characters or sizes it
    /// refuses at send), or <c>null</c> when it can.
    /// </summary>
    string? CannotCarry(RawMessage message);

    /// <summary>
    /// The text a binary-typed (<c>byte[]</c>) header value of a CloudEvents attribute reads back as on this transport, as the
    /// README documents it: the UTF-8 text on RabbitMQ (byte arrays are accepted as text), base64 (the CloudEvents string
    /// form of Binary) where the wire's binary type is read as Binary (Service Bus, SQS) or where the fixture has to send
    /// bytes as a base64 string attribute (Pub/Sub, in-memory).
    /// </summary>
    string BinaryAttributeText(byte[] value);

    /// <summary>
    /// The header in which the transport carries its own count of attempts made before this copy of a message, or
    /// <c>null</c> when the broker counts attempts itself (a header of that name is then just a foreign header).
    /// </summary>
    string? PriorAttemptsHeader { get; }

    /// <summary>True when the suite can restart the broker (a local broker it controls).</summary>
    bool CanRestartBroker { get; }

    /// <summary>
    /// How long after a consumer is killed the broker is known to hand a key's later messages to another consumer ahead of
    /// earlier ones the killed consumer held but never started (the ordering case tolerates exactly those, and only in this
    /// window); <c>null</c> for a broker that keeps a key's order through a consumer crash.
    /// </summary>
    TimeSpan? KeyReorderWindowAfterCrash => null;

    /// <summary>Stops and starts the broker.</summary>
    Task RestartBrokerAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Settings that make the broker's own crash safety net (its delivery limit for messages that keep coming back unsettled)
    /// small, for the crash-loop case; empty where the broker's limit cannot be lowered (Pub/Sub: at least 5).
    /// </summary>
    IDictionary<string, string?> CrashLimitSettings { get; }

    /// <summary>
    /// True when the suite can cause faults on this broker (a local broker or endpoint it controls); false against a broker
    /// it does not control, where the fault cases skip on a laptop and fail when the transport is required.
    /// </summary>
    bool CanInjectFaults { get; }

    /// <summary>
    /// Makes the broker hold or refuse every publish of the hosts of this fixture until the returned handle is disposed, as
    /// a production broker does under pressure: RabbitMQ's memory alarm, 503 ServiceUnavailable from the SNS endpoint,
    /// server-busy from the Service Bus endpoint, a Pub/Sub emulator that stops answering, a blocked in-memory broker.
    /// </summary>
    Task<IAsyncDisposable> BlockPublishesAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Breaks, from the broker's side, what the consumers of <paramref name="subscription"/> receive on: RabbitMQ closes the
    /// consuming connections, the Service Bus endpoint detaches the receive links, the connections to the Pub/Sub emulator
    /// are reset, the SQS endpoint answers 503 to receives. A fault that lasts (the 503s) lasts until the handle is disposed;
    /// a close is over at once. Only transports whose capabilities say they connect to a broker are asked.
    /// </summary>
    Task<IAsyncDisposable> BreakConsumersAsync(string topic, string subscription, CancellationToken cancellationToken);

    /// <summary>
    /// True when the fault of <see cref="BreakConsumersAsync"/> lasts until its handle is disposed (the SQS endpoint's 503s),
    /// so that consumers keep failing meanwhile; false when it is over at once (a close, a detach, a reset).
    /// </summary>
    bool BrokenConsumersStayBroken { get; }

    /// <summary>
    /// Gives a host's subscriptions a lease (SQS visibility timeout, Service Bus lock, Pub/Sub ack deadline) of
    /// <see cref="LongLease"/> instead of the fixture's short one, which exists so that a crashed consumer's message comes
    /// back within the waits. For cases that count deliveries exactly: under a short lease a renewal held up a few seconds
    /// by a loaded machine lets the broker deliver the message again, as at-least-once allows. No-op where the broker has no lease.
    /// </summary>
    void UseLongLeases(IServiceCollection services);

    /// <summary>
    /// Takes away, on the broker, the leases of the messages of <paramref name="subscription"/> that consumers hold now, as
    /// if they had run out: Service Bus locks expire, SQS messages become visible again, RabbitMQ closes the consuming
    /// connections (a delivery's lease is its channel). Only transports whose capabilities say they report lost leases are asked.
    /// </summary>
    Task ExpireLeasesAsync(string topic, string subscription, CancellationToken cancellationToken);

    /// <summary>Removes what a test created, best effort.</summary>
    Task DeleteSubscriptionAsync(string topic, string subscription);
}
