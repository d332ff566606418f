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
    public static Backoff Immediate { get; } = new(BackoffKind.Immediate, TimeSpan.Zero, TimeSpan.Zero);

    public static Backoff Fixed(TimeSpan delay) => new(BackoffKind.Fixed, delay, delay);

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
