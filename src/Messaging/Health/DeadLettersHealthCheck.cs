using Messaging.DeadLetters;
using Messaging.Hosting;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;

namespace Messaging.Health;

/// <summary>
/// Degraded when a subscription holds at least <see cref="MessagingHealthCheckOptions.DeadLetterDegradedThreshold"/> dead
/// letters, naming it and the count; the failure status when the dead letters cannot be counted.
/// </summary>
internal sealed class DeadLettersHealthCheck(MessagingModel model, IDeadLetterStore store, IOptions<MessagingHealthCheckOptions> options) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var settings = options.Value;
        if (settings.DeadLetterDegradedThreshold is not { } threshold)
        {
            return HealthCheckResult.Healthy("The dead-letter check is off (Messaging:HealthChecks:DeadLetterDegradedThreshold is unset).");
        }
        using var bound = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        bound.CancelAfter(settings.CheckTimeout);
        var subscriptions = model.Subscriptions.Keys.Order(StringComparer.Ordinal).ToList();
        var counts = await Task.WhenAll(subscriptions.Select(s => CountAsync(s, threshold, bound.Token))).ConfigureAwait(false);
        cancellationToken.ThrowIfCancellationRequested();

        var data = new Dictionary<string, object>(StringComparer.Ordinal);
        var over = new List<string>();
        var failed = new List<string>();
        Exception? firstFailure = null;
        for (var i = 0; i < subscriptions.Count; i++)
        {
            var (count, failure) = counts[i];
            if (failure is not null)
            {
                firstFailure ??= failure;
                var why = failure is OperationCanceledException ? $"no answer within {settings.CheckTimeout}" : failure.Message;
                failed.Add($"Could not count the dead letters of subscription {subscriptions[i]}: {why}");
                data[subscriptions[i]] = "unknown";
                continue;
            }
            data[subscriptions[i]] = count.ToString();
            if (count.Count >= threshold)
            {
                over.Add($"Subscription {subscriptions[i]} holds {count} dead letter(s).");
            }
        }
        if (failed.Count > 0)
        {
            return new HealthCheckResult(context.Registration.FailureStatus, string.Join(" ", failed.Concat(over)), firstFailure, data);
        }
        if (over.Count > 0)
        {
            return HealthCheckResult.Degraded(string.Join(" ", over), data: data);
        }
        return HealthCheckResult.Healthy(
            subscriptions.Count == 0 ? "No subscription to check." : $"No subscription holds {threshold} dead letter(s) or more.", data);
    }

    private async Task<(DeadLetterCount Count, Exception? Failure)> CountAsync(string subscription, int threshold, CancellationToken cancellationToken)
    {
        try
        {
            return (await store.CountAsync(subscription, threshold, cancellationToken).WaitAsync(cancellationToken).ConfigureAwait(false), null);
        }
        catch (Exception ex)
        {
            return (default, ex);
        }
    }
}
