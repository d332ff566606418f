namespace Messaging.Health;

/// <summary>
/// Settings of the messaging health checks (<see cref="MessagingHealthChecksBuilderExtensions.AddMessagingHealthChecks"/>),
/// read from the <c>Messaging:HealthChecks</c> configuration section when there is one, then from code.
/// </summary>
public sealed class MessagingHealthCheckOptions
{
    /// <summary>The configuration section these options are read from.</summary>
    public const string SectionName = "Messaging:HealthChecks";

    /// <summary>
    /// How long a consumer's receiving may keep failing before the consumers check reports it unhealthy; until then it is
    /// degraded, so a short blip (a broker closing a stream to rebalance, a reconnect) does not flap the status.
    /// Zero reports unhealthy at once. Default 30 seconds.
    /// </summary>
    public TimeSpan ConsumerFailureGracePeriod { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// The dead-letter check reports degraded when a subscription holds at least this many dead letters; null turns the
    /// check off (it then reports healthy without asking the broker). Default 1: any dead letter wants a look.
    /// </summary>
    public int? DeadLetterDegradedThreshold { get; set; } = 1;

    /// <summary>
    /// How long the broker check and the dead-letter check wait for the broker before they report unhealthy. Default 5 seconds.
    /// </summary>
    public TimeSpan CheckTimeout { get; set; } = TimeSpan.FromSeconds(5);
}
