namespace Messaging.Policy;

/// <summary>How often a failing event is tried and how long to wait between tries.</summary>
public sealed record RetryPolicy(int MaxAttempts, Backoff Backoff)
{
    /// <summary>Five attempts, exponential backoff from one second, capped at one minute.</summary>
    public static RetryPolicy Default { get; } = new(5, Backoff.Exponential(TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(1)));

    /// <summary>The delay before the attempt that follows failed attempt <paramref name="failedAttempt"/> (1-based).</summary>
    public TimeSpan DelayAfter(int failedAttempt) => Backoff.DelayAfter(failedAttempt);

    /// <summary>All distinct delays this policy can ask for, for transports that provision one destination per delay.</summary>
    public IReadOnlyList<TimeSpan> DistinctDelays() =>
        Enumerable.Range(1, Math.Max(0, MaxAttempts - 1)).Select(DelayAfter).Distinct().Order().ToList();
}
