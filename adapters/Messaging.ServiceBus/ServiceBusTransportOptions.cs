using CloudNative.CloudEvents;
using Azure.Core;

namespace Messaging.ServiceBus;

/// <summary>Settings of the Azure Service Bus transport (<c>Messaging:ServiceBus</c>).</summary>
public sealed class ServiceBusTransportOptions
{
    /// <summary>The configuration section these options are bound from.</summary>
    public const string SectionName = "Messaging:ServiceBus";

    /// <summary>The message size limit of the Standard tier (256 KiB, headers included).</summary>
    public const int StandardTierMaxMessageBytes = 256 * 1024;

    /// <summary>The largest message the Premium tier accepts (100 MiB).</summary>
    public const int PremiumTierMaxMessageBytes = 100 * 1024 * 1024;

    /// <summary>
    /// A Service Bus connection string (<c>Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...</c>), including
    /// the emulator's form with <c>UseDevelopmentEmulator=true</c>. Either this or <see cref="FullyQualifiedNamespace"/> is required.
    /// </summary>
    public string? ConnectionString { get; set; }

    /// <summary>
    /// The namespace host (<c>my-namespace.servicebus.windows.net</c>) when authenticating with Microsoft Entra ID. The
    /// credential is <see cref="Credential"/> or else the <see cref="TokenCredential"/> registered in dependency injection
    /// (for example <c>new DefaultAzureCredential()</c> from Azure.Identity).
    /// </summary>
    public string? FullyQualifiedNamespace { get; set; }

    /// <summary>The credential used with <see cref="FullyQualifiedNamespace"/>; not bindable from configuration.</summary>
    public TokenCredential? Credential { get; set; }

    /// <summary>
    /// A connection string for the administration (ATOM) API, when it is served elsewhere than the messaging endpoint.
    /// The Service Bus emulator serves it on port 5300: <c>Endpoint=sb://localhost:5300;...;UseDevelopmentEmulator=true</c>.
    /// Defaults to <see cref="ConnectionString"/>.
    /// </summary>
    public string? AdministrationConnectionString { get; set; }

    /// <summary>Binary (the default, the AMQP binding's <c>cloudEvents_</c> application properties) or structured JSON.</summary>
    public ContentMode ContentMode { get; set; } = ContentMode.Binary;

    /// <summary>
    /// Also copy the CloudEvent <c>subject</c> to the message's Subject (the AMQP <c>subject</c> property, shown as "Label"
    /// by Service Bus tools, usable in correlation filters). The <c>cloudEvents_subject</c> property stays the source of truth.
    /// </summary>
    public bool CopySubjectToMessageSubject { get; set; } = true;

    /// <summary>
    /// The largest event accepted (body plus properties as encoded). Defaults to the Standard tier's 256 KiB; set up to
    /// 100 MiB (<see cref="PremiumTierMaxMessageBytes"/>) for a Premium namespace configured for large messages.
    /// </summary>
    public int MaxEventSizeBytes { get; set; } = StandardTierMaxMessageBytes;

    /// <summary>
    /// The entities' MaxDeliveryCount: after this many deliveries of one message copy without settlement (crashed consumers,
    /// expired locks) Service Bus moves it to the dead-letter sub-queue by itself (reason <c>MaxDeliveryCountExceeded</c>).
    /// A safety net only: ordinary failures follow the subscription's retry policy, and every retry is a fresh copy whose
    /// delivery count starts again at 1, so this never competes with <c>MaxAttempts</c>.
    /// </summary>
    public int MaxDeliveryCount { get; set; } = 10;

    /// <summary>The entities' lock duration (PeekLock) for entities this transport creates. Service Bus allows 5 s to 5 min.</summary>
    public TimeSpan LockDuration { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>How long a running handler keeps its message locked by renewing the lock; after that the lock may be lost.</summary>
    public TimeSpan MaxAutoLockRenewalDuration { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// Most messages one receive call asks for (never more than free handler slots). The default, 1, is what the SDK's own
    /// processor does: a receive that gets fewer messages than it asked for leaves link credit behind, which the SDK then
    /// drains, releasing whatever arrives meanwhile. Larger values save round trips on a busy subscription.
    /// </summary>
    public int MaxMessagesPerReceive { get; set; } = 1;

    /// <summary>How long one receive call waits for messages before asking again.</summary>
    public TimeSpan ReceiveWaitTime { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>
    /// Ordered subscriptions (sessions): how long a held session may stay without new messages, once every message of it
    /// received is settled, before it is closed and the next session accepted. Short keeps many keys moving through the
    /// subscription's <c>Concurrency</c> session slots; each release and accept costs a round trip.
    /// </summary>
    public TimeSpan SessionIdleTimeout { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Retries of one Service Bus operation on transient failures (the SDK's retry policy).</summary>
    public int MaxRetries { get; set; } = 6;

    /// <summary>The first delay between those retries; it grows exponentially up to 10 seconds.</summary>
    public TimeSpan RetryDelay { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>How long one try of an operation may take.</summary>
    public TimeSpan TryTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Use AMQP over WebSockets (port 443) where outbound port 5671 is blocked.</summary>
    public bool UseWebSockets { get; set; }

    /// <summary>Name attached to this application's connections, for diagnostics.</summary>
    public string? ClientIdentifier { get; set; }
}
