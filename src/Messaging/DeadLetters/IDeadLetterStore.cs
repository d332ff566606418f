namespace Messaging.DeadLetters;

/// <summary>Reads and replays the dead-letter destination of a subscription.</summary>
public interface IDeadLetterStore
{
    /// <summary>Returns up to <paramref name="maxCount"/> dead-lettered events without removing them.</summary>
    Task<IReadOnlyList<DeadLetteredEvent>> PeekAsync(string subscription, int maxCount, CancellationToken cancellationToken);

    /// <summary>
    /// Moves the dead-lettered events selected by <paramref name="select"/> back to the subscription, where they are
    /// delivered again starting from attempt 1; the others stay. Returns how many were replayed.
    /// </summary>
    Task<int> ReplayAsync(string subscription, Func<DeadLetteredEvent, bool> select, CancellationToken cancellationToken);

    /// <summary>
    /// Deletes, for good, the dead-lettered events of <paramref name="subscription"/> selected by <paramref name="select"/>; the
    /// others stay. It walks the dead letters as <see cref="ReplayAsync"/> does, but removes instead of republishing. Returns
    /// how many were removed.
    /// </summary>
    Task<int> PurgeAsync(string subscription, Func<DeadLetteredEvent, bool> select, CancellationToken cancellationToken);

    /// <summary>
    /// Counts the dead letters of <paramref name="subscription"/>. A store that can ask its broker for the depth of the
    /// dead-letter destination returns it (<see cref="DeadLetterCount.IsExact"/>, though the broker's own count may be
    /// approximate); by default the store peeks at most <paramref name="maxCount"/> dead letters and returns how many it saw,
    /// which is a lower bound when it is <paramref name="maxCount"/>.
    /// </summary>
    async Task<DeadLetterCount> CountAsync(string subscription, int maxCount, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxCount);
        var peeked = await PeekAsync(subscription, maxCount, cancellationToken).ConfigureAwait(false);
        return new DeadLetterCount(peeked.Count, IsExact: peeked.Count < maxCount);
    }
}

/// <summary>How many dead letters a subscription has (<see cref="IDeadLetterStore.CountAsync"/>).</summary>
/// <param name="Count">The number counted.</param>
/// <param name="IsExact">False when the store stopped counting at the maximum it was asked for: there may be more.</param>
public readonly record struct DeadLetterCount(long Count, bool IsExact)
{
    /// <summary>The count as operators read it: "3", or "at least 3".</summary>
    public override string ToString() => IsExact ? Count.ToString(System.Globalization.CultureInfo.InvariantCulture) : $"at least {Count.ToString(System.Globalization.CultureInfo.InvariantCulture)}";
}
