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
}
