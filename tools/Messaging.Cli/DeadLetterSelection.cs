using Messaging.DeadLetters;

namespace Messaging.Cli;

/// <summary>
/// Which dead letters a replay or purge takes: <c>--all</c>, or those matching every given kind of filter, where a filter
/// given several times matches any of its values (<c>--id a --id b --reason Rejected</c>: a or b, if rejected).
/// </summary>
internal sealed record DeadLetterSelection(IReadOnlyList<string> Ids, IReadOnlyList<string> Types, IReadOnlyList<DeadLetterReason> Reasons, bool All)
{
    public static DeadLetterSelection Parse(string[]? ids, string[]? types, string[]? reasons, bool all)
    {
        ids ??= [];
        types ??= [];
        reasons ??= [];
        var parsed = new List<DeadLetterReason>();
        foreach (var reason in reasons)
        {
            if (!Enum.TryParse<DeadLetterReason>(reason, ignoreCase: true, out var value) || int.TryParse(reason, out _))
            {
                throw new CliException(ExitCodes.UsageError,
                    $"--reason '{reason}' is not a dead-letter reason; use one of: {string.Join(", ", Enum.GetNames<DeadLetterReason>())}.");
            }
            parsed.Add(value);
        }
        var selection = new DeadLetterSelection(ids, types, parsed, all);
        if (all && (ids.Length > 0 || types.Length > 0 || parsed.Count > 0))
        {
            throw new CliException(ExitCodes.UsageError, "--all takes every dead letter; do not combine it with --id, --type or --reason.");
        }
        if (!all && ids.Length == 0 && types.Length == 0 && parsed.Count == 0)
        {
            throw new CliException(ExitCodes.UsageError, "no dead letters selected: give --id, --type, --reason or --all.");
        }
        return selection;
    }

    public bool Matches(DeadLetteredEvent deadLetter) =>
        All || ((Ids.Count == 0 || Ids.Any(id => id == deadLetter.DeadLetterId || id == deadLetter.Event?.Id))
                && (Types.Count == 0 || Types.Any(type => type == deadLetter.Event?.Type))
                && (Reasons.Count == 0 || Reasons.Contains(deadLetter.Metadata.Reason)));

    public override string ToString()
    {
        if (All)
        {
            return "--all";
        }
        var parts = new List<string>();
        parts.AddRange(Ids.Select(id => $"--id {id}"));
        parts.AddRange(Types.Select(type => $"--type {type}"));
        parts.AddRange(Reasons.Select(reason => $"--reason {reason}"));
        return string.Join(' ', parts);
    }
}
