namespace Messaging.Policy;

/// <summary>The kinds of backoff between delivery attempts.</summary>
public enum BackoffKind
{
    /// <summary>Redeliver at once.</summary>
    Immediate,

    /// <summary>Wait the same delay before every retry.</summary>
    Fixed,

    /// <summary>Double (or multiply by <see cref="Backoff.Multiplier"/>) the delay each retry, up to <see cref="Backoff.MaxDelay"/>.</summary>
    Exponential,
}

/// <summary>A backoff schedule. Deterministic (no jitter), so every broker waits the same.</summary>
public sealed record Backoff(BackoffKind Kind, TimeSpan Delay, TimeSpan MaxDelay, double Multiplier = 2)
{
    /// <summary>No wait: a failed event is delivered again at once.</summary>
    public static Backoff Immediate { get; } = new(BackoffKind.Immediate, TimeSpan.Zero, TimeSpan.Zero);

    /// <summary>Waits <paramref name="delay"/> before every retry.</summary>
    /// <param name="delay">The wait before each retry. Transports round it to their granularity (whole seconds on Pub/Sub and SNS/SQS).</param>
    public static Backoff Fixed(TimeSpan delay) => new(BackoffKind.Fixed, delay, delay);

    /// <summary>
    /// Waits <paramref name="initialDelay"/> after the first failed attempt and multiplies the wait by
    /// <paramref name="multiplier"/> after each further one, never waiting longer than <paramref name="maxDelay"/>.
    /// </summary>
    /// <param name="initialDelay">The wait after the first failed attempt.</param>
    /// <param name="maxDelay">The cap of the wait.</param>
    /// <param name="multiplier">The growth factor per failed attempt; default 2 (the wait doubles).</param>
    public static Backoff Exponential(TimeSpan initialDelay, TimeSpan maxDelay, double multiplier = 2) =>
        new(BackoffKind.Exponential, initialDelay, maxDelay, multiplier);

    /// <summary>The delay after failed attempt <paramref name="failedAttempt"/> (1-based), rounded to whole milliseconds.</summary>
    public TimeSpan DelayAfter(int failedAttempt)
    {
        var delay = Kind switch
        {
            BackoffKind.Immediate => TimeSpan.Zero,
            BackoffKind.Fixed => Delay,
            BackoffKind.Exponential => TimeSpan.FromMilliseconds(Math.Min(
                Delay.TotalMilliseconds * Math.Pow(Multiplier, Math.Max(0, failedAttempt - 1)),
                MaxDelay.TotalMilliseconds)),
            _ => throw new InvalidOperationException($"Unknown backoff kind {Kind}."),
        };
        return TimeSpan.FromMilliseconds(Math.Round(delay.TotalMilliseconds));
    }
}
