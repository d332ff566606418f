using System.Globalization;
using Messaging.Hosting;
using Messaging.Transport;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;

namespace Messaging.Health;

/// <summary>
/// Every subscription's consumer runs and receives: unhealthy when one is not running while the host runs, or when its
/// receiving has kept failing for the grace period (degraded before that); degraded while the host stops the consumers.
/// </summary>
internal sealed class ConsumersHealthCheck(ConsumerRegistry registry, IOptions<MessagingHealthCheckOptions> options, TimeProvider time) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var (state, consumers) = registry.Snapshot();
        return Task.FromResult(Evaluate(state, consumers, time.GetUtcNow(), options.Value.ConsumerFailureGracePeriod));
    }

    /// <summary>The check's decision, apart from where the state comes from.</summary>
    internal static HealthCheckResult Evaluate(ConsumerRegistry.HostState state, IReadOnlyList<ConsumerHealth> consumers, DateTimeOffset now, TimeSpan gracePeriod)
    {
        switch (state)
        {
            case ConsumerRegistry.HostState.NotStarted:
                return HealthCheckResult.Unhealthy("Messaging has not started its consumers yet.");
            case ConsumerRegistry.HostState.Stopping:
                return HealthCheckResult.Degraded("Messaging is stopping its consumers with the host.");
        }
        var status = HealthStatus.Healthy;
        var problems = new List<string>();
        var data = new Dictionary<string, object>(StringComparer.Ordinal);
        foreach (var consumer in consumers)
        {
            var (consumerStatus, description) = Describe(consumer, now, gracePeriod);
            data[consumer.Subscription] = description;
            if (consumerStatus < HealthStatus.Healthy)
            {
                problems.Add(description);
                status = consumerStatus < status ? consumerStatus : status;
            }
        }
        if (problems.Count == 0)
        {
            return HealthCheckResult.Healthy(
                consumers.Count == 0 ? "No subscription is consumed." : $"{consumers.Count} consumer(s) running: {string.Join(", ", consumers.Select(c => c.Subscription))}.",
                data);
        }
        return new HealthCheckResult(status, string.Join(" ", problems), data: data);
    }

    private static (HealthStatus Status, string Description) Describe(ConsumerHealth consumer, DateTimeOffset now, TimeSpan gracePeriod) => consumer switch
    {
        { State: ConsumerState.NotStarted } =>
            (HealthStatus.Unhealthy, $"The consumer of subscription {consumer.Subscription} has not started."),
        { State: ConsumerState.Stopped } =>
            (HealthStatus.Unhealthy, $"The consumer of subscription {consumer.Subscription} stopped at {Time(consumer.Since)} while the host runs."),
        { ReceiveFailure: { } failure, FailingSince: { } since } when now - since >= gracePeriod =>
            (HealthStatus.Unhealthy, $"Subscription {consumer.Subscription} has failed to receive since {Time(since)} ({Duration(now - since)}): {failure}"),
        { ReceiveFailure: { } failure, FailingSince: { } since } =>
            (HealthStatus.Degraded, $"Subscription {consumer.Subscription} has failed to receive since {Time(since)} ({Duration(now - since)}, unhealthy after {Duration(gracePeriod)}): {failure}"),
        _ => (HealthStatus.Healthy, $"Subscription {consumer.Subscription} is consumed since {Time(consumer.Since)}."),
    };

    private static string Time(DateTimeOffset? time) => time?.ToString("O", CultureInfo.InvariantCulture) ?? "?";

    private static string Duration(TimeSpan duration) => duration.ToString(@"d\.hh\:mm\:ss", CultureInfo.InvariantCulture);
}
