using System.Globalization;

namespace Messaging.DeadLetters;

/// <summary>The uniform metadata every transport stores with a dead-lettered event.</summary>
public sealed record DeadLetterMetadata
{
    /// <summary>Why the event was dead-lettered (attempts exhausted, rejected by a handler, invalid, no handler, ...).</summary>
    public required DeadLetterReason Reason { get; init; }

    /// <summary>A human-readable explanation (the handler's rejection reason, say), clipped to <see cref="MaxTextLength"/> characters when stored.</summary>
    public string? Description { get; init; }

    /// <summary>The full name of the exception type that caused the last failure, if any.</summary>
    public string? ExceptionType { get; init; }

    /// <summary>The message of that exception.</summary>
    public string? ExceptionMessage { get; init; }

    /// <summary>How many delivery attempts were made.</summary>
    public required int AttemptCount { get; init; }

    /// <summary>The subscription the event was dead-lettered from.</summary>
    public required string SourceSubscription { get; init; }

    /// <summary>When it was dead-lettered; <see cref="DateTimeOffset.MinValue"/> when the stored metadata lacks the time.</summary>
    public required DateTimeOffset Time { get; init; }

    /// <summary>Wire names of the metadata properties, identical on every broker.</summary>
    public static class PropertyNames
    {
        /// <summary>The prefix every metadata property shares.</summary>
        public const string Prefix = "deadletter-";

        /// <summary>Property holding <see cref="DeadLetterMetadata.Reason"/>, as the enum member's name.</summary>
        public const string Reason = "deadletter-reason";
        /// <summary>Property holding <see cref="DeadLetterMetadata.Description"/>, clipped to <see cref="MaxTextLength"/> characters.</summary>
        public const string Description = "deadletter-description";
        /// <summary>Property holding <see cref="DeadLetterMetadata.ExceptionType"/>.</summary>
        public const string ExceptionType = "deadletter-exception-type";
        /// <summary>Property holding <see cref="DeadLetterMetadata.ExceptionMessage"/>, clipped to <see cref="MaxTextLength"/> characters.</summary>
        public const string ExceptionMessage = "deadletter-exception-message";
        /// <summary>Property holding <see cref="DeadLetterMetadata.AttemptCount"/>, as an invariant-culture integer.</summary>
        public const string AttemptCount = "deadletter-attempts";
        /// <summary>Property holding <see cref="DeadLetterMetadata.SourceSubscription"/>.</summary>
        public const string SourceSubscription = "deadletter-subscription";
        /// <summary>Property holding <see cref="DeadLetterMetadata.Time"/>, in UTC, ISO 8601 round-trip format (<c>O</c>).</summary>
        public const string Time = "deadletter-time";
    }

    /// <summary>True for the properties this metadata adds; replay and decoding strip them from the event's own.</summary>
    public static bool IsMetadataProperty(string key) => key.StartsWith(PropertyNames.Prefix, StringComparison.Ordinal);

    /// <summary>Longest exception message or description stored, so metadata stays within broker header limits.</summary>
    public const int MaxTextLength = 1024;

    /// <summary>The metadata as string properties, for transports that store it as headers or attributes.</summary>
    public IEnumerable<KeyValuePair<string, string>> ToProperties()
    {
        yield return new(PropertyNames.Reason, Reason.ToString());
        if (Description is not null)
        {
            yield return new(PropertyNames.Description, Clip(Description));
        }
        if (ExceptionType is not null)
        {
            yield return new(PropertyNames.ExceptionType, ExceptionType);
        }
        if (ExceptionMessage is not null)
        {
            yield return new(PropertyNames.ExceptionMessage, Clip(ExceptionMessage));
        }
        yield return new(PropertyNames.AttemptCount, AttemptCount.ToString(CultureInfo.InvariantCulture));
        yield return new(PropertyNames.SourceSubscription, SourceSubscription);
        yield return new(PropertyNames.Time, Time.ToUniversalTime().ToString("O", CultureInfo.InvariantCulture));
    }

    /// <summary>Reads metadata back from properties; missing values fall back to what the caller knows.</summary>
    public static DeadLetterMetadata FromProperties(Func<string, string?> lookup, string subscription, int fallbackAttempts, DeadLetterReason fallbackReason)
    {
        ArgumentNullException.ThrowIfNull(lookup);
        var reason = Enum.TryParse<DeadLetterReason>(lookup(PropertyNames.Reason), out var r) ? r : fallbackReason;
        var attempts = int.TryParse(lookup(PropertyNames.AttemptCount), NumberStyles.Integer, CultureInfo.InvariantCulture, out var a) ? a : fallbackAttempts;
        var time = DateTimeOffset.TryParse(lookup(PropertyNames.Time), CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var t) ? t : DateTimeOffset.MinValue;
        return new DeadLetterMetadata
        {
            Reason = reason,
            Description = lookup(PropertyNames.Description),
            ExceptionType = lookup(PropertyNames.ExceptionType),
            ExceptionMessage = lookup(PropertyNames.ExceptionMessage),
            AttemptCount = attempts,
            SourceSubscription = lookup(PropertyNames.SourceSubscription) ?? subscription,
            Time = time,
        };
    }

    private static string Clip(string text) => text.Length <= MaxTextLength ? text : text[..MaxTextLength];
}
