using Messaging.DeadLetters;

namespace Messaging.Tests.Infrastructure;

internal static class Metadata
{
    public static DeadLetterMetadata DeadLetter(DeadLetterReason reason = DeadLetterReason.Rejected) => new()
    {
        Reason = reason,
        Description = "rejected by the test",
        AttemptCount = 1,
        SourceSubscription = "orders.billing",
        Time = DateTimeOffset.UnixEpoch,
    };
}
