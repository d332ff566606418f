using System.Globalization;
using System.Text;
using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Spectre.Console;

namespace Messaging.Cli;

/// <summary><c>messaging dlq list | show | replay | purge</c>.</summary>
internal static class DeadLetterCommands
{
    public static async Task<int> ListAsync(CliContext context, CliSession session, string subscription, int max, CancellationToken cancellationToken)
    {
        if (max < 1)
        {
            throw new CliException(ExitCodes.UsageError, $"--max must be at least 1 (was {max}).");
        }
        var deadLetters = await session.DeadLetters.PeekAsync(subscription, max, cancellationToken).ConfigureAwait(false);
        var count = await session.DeadLetters.CountAsync(subscription, max, cancellationToken).ConfigureAwait(false);
        var console = context.Console;
        if (deadLetters.Count == 0)
        {
            console.WriteLine($"No dead letters in {subscription} ({session.Transport.Name}).");
            return ExitCodes.Success;
        }
        console.Write(Table(deadLetters));
        console.WriteLine(deadLetters.Count < count.Count || !count.IsExact
            ? $"{deadLetters.Count} shown of {count} dead letter(s) in {subscription} ({session.Transport.Name})."
            : $"{deadLetters.Count} dead letter(s) in {subscription} ({session.Transport.Name}).");
        return ExitCodes.Success;
    }

    public static async Task<int> ShowAsync(CliContext context, CliSession session, string subscription, string id, CancellationToken cancellationToken)
    {
        var deadLetters = await session.DeadLetters.PeekAsync(subscription, MessagingCli.PeekLimit, cancellationToken).ConfigureAwait(false);
        var deadLetter = deadLetters.FirstOrDefault(d => d.Event?.Id == id) ?? deadLetters.FirstOrDefault(d => d.DeadLetterId == id)
                         ?? throw new CliException(ExitCodes.NotFound, $"no dead letter of {subscription} has event id or dead-letter id '{id}' ({deadLetters.Count} dead letter(s) looked at).");
        var console = context.Console;

        var attributes = new Table().Title("CloudEvent").AddColumn("Attribute").AddColumn("Value");
        if (deadLetter.Event is { } cloudEvent)
        {
            foreach (var (attribute, value) in cloudEvent.GetPopulatedAttributes())
            {
                attributes.AddRow(new Text(attribute.Name), new Text(attribute.Format(value)));
            }
        }
        else
        {
            attributes.AddRow(new Text("(none)"), new Text("the message is not a valid CloudEvent"));
        }
        attributes.AddRow(new Text("dead-letter id"), new Text(deadLetter.DeadLetterId));
        console.Write(attributes);

        var metadata = deadLetter.Metadata;
        var table = new Table().Title("Dead-letter metadata").AddColumn("Property").AddColumn("Value");
        foreach (var (key, value) in metadata.ToProperties())
        {
            table.AddRow(new Text(key), new Text(value));
        }
        console.Write(table);

        console.Write(new Rule("Data"));
        console.WriteLine(DataText(deadLetter));
        return ExitCodes.Success;
    }

    public static async Task<int> ReplayAsync(CliContext context, CliSession session, string subscription, DeadLetterSelection selection, bool dryRun,
        CancellationToken cancellationToken)
    {
        var chosen = await ChooseAsync(session, subscription, selection, cancellationToken).ConfigureAwait(false);
        var console = context.Console;
        if (dryRun)
        {
            console.Write(Table(chosen));
            console.WriteLine($"Would replay {chosen.Count} dead letter(s) of {subscription} ({session.Transport.Name}); nothing was changed (--dry-run).");
            return ExitCodes.Success;
        }
        var replayed = await WithProgressAsync(console, $"Replaying {subscription}", chosen.Count, selection,
            (select, ct) => session.DeadLetters.ReplayAsync(subscription, select, ct), cancellationToken).ConfigureAwait(false);
        if (replayed == 0)
        {
            throw new CliException(ExitCodes.NotFound, $"no dead letter of {subscription} matched {selection} any more: another process took them meanwhile.");
        }
        console.WriteLine($"Replayed {replayed} dead letter(s) of {subscription} ({session.Transport.Name}).");
        return ExitCodes.Success;
    }

    public static async Task<int> PurgeAsync(CliContext context, CliSession session, string subscription, DeadLetterSelection selection, bool dryRun, bool confirmed,
        CancellationToken cancellationToken)
    {
        var chosen = await ChooseAsync(session, subscription, selection, cancellationToken).ConfigureAwait(false);
        var console = context.Console;
        if (dryRun || !confirmed)
        {
            console.Write(Table(chosen));
            if (dryRun)
            {
                console.WriteLine($"Would delete {chosen.Count} dead letter(s) of {subscription} ({session.Transport.Name}); nothing was changed (--dry-run).");
                return ExitCodes.Success;
            }
            throw new CliException(ExitCodes.UsageError,
                $"purge would delete {chosen.Count} dead letter(s) of {subscription} for good; add --yes to confirm (nothing was deleted).");
        }
        var purged = await WithProgressAsync(console, $"Purging {subscription}", chosen.Count, selection,
            (select, ct) => session.DeadLetters.PurgeAsync(subscription, select, ct), cancellationToken).ConfigureAwait(false);
        if (purged == 0)
        {
            throw new CliException(ExitCodes.NotFound, $"no dead letter of {subscription} matched {selection} any more: another process took them meanwhile.");
        }
        console.WriteLine($"Deleted {purged} dead letter(s) of {subscription} ({session.Transport.Name}).");
        return ExitCodes.Success;
    }

    /// <summary>Runs a replay or purge over the selection with a progress bar counting the dead letters it takes.</summary>
    private static async Task<int> WithProgressAsync(IAnsiConsole console, string title, int expected, DeadLetterSelection selection,
        Func<Func<DeadLetteredEvent, bool>, CancellationToken, Task<int>> run, CancellationToken cancellationToken)
    {
        var done = 0;
        await Progress(console).StartAsync(async progress =>
        {
            var task = progress.AddTask(title, maxValue: expected);
            done = await run(d =>
            {
                var take = selection.Matches(d);
                if (take)
                {
                    task.Increment(1);
                }
                return take;
            }, cancellationToken).ConfigureAwait(false);
            task.Value = task.MaxValue;
        }).ConfigureAwait(false);
        return done;
    }

    private static async Task<IReadOnlyList<DeadLetteredEvent>> ChooseAsync(CliSession session, string subscription, DeadLetterSelection selection,
        CancellationToken cancellationToken)
    {
        var deadLetters = await session.DeadLetters.PeekAsync(subscription, MessagingCli.PeekLimit, cancellationToken).ConfigureAwait(false);
        var chosen = deadLetters.Where(selection.Matches).ToList();
        if (chosen.Count == 0)
        {
            throw new CliException(ExitCodes.NotFound,
                $"no dead letter of {subscription} matches {selection} ({deadLetters.Count} dead letter(s) looked at on {session.Transport.Name}).");
        }
        return chosen;
    }

    private static Spectre.Console.Progress Progress(IAnsiConsole console) =>
        console.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn());

    internal static Table Table(IEnumerable<DeadLetteredEvent> deadLetters)
    {
        var table = new Table()
            .AddColumn("Event id")
            .AddColumn("Type")
            .AddColumn("Reason")
            .AddColumn("Attempts")
            .AddColumn("Dead-lettered")
            .AddColumn("Why")
            .AddColumn("Dead-letter id");
        foreach (var deadLetter in deadLetters)
        {
            var metadata = deadLetter.Metadata;
            var why = metadata.ExceptionType is { } type ? $"{ShortName(type)}: {metadata.ExceptionMessage}" : metadata.Description ?? "";
            table.AddRow(
                new Text(deadLetter.Event?.Id ?? "(not a CloudEvent)"),
                new Text(deadLetter.Event?.Type ?? ""),
                new Text(metadata.Reason.ToString()),
                new Text(metadata.AttemptCount.ToString(CultureInfo.InvariantCulture)),
                new Text(metadata.Time == DateTimeOffset.MinValue ? "" : metadata.Time.ToUniversalTime().ToString("u", CultureInfo.InvariantCulture)),
                new Text(why.Length > 50 ? why[..47] + "..." : why),
                new Text(deadLetter.DeadLetterId));
        }
        return table;
    }

    private static string ShortName(string typeName) => typeName[(typeName.LastIndexOf('.') + 1)..];

    private static string DataText(DeadLetteredEvent deadLetter)
    {
        var bytes = deadLetter.Event is { } cloudEvent ? Messaging.Envelope.CloudEventData.GetBytes(cloudEvent) : deadLetter.Body.ToArray();
        if (bytes is null || bytes.Length == 0)
        {
            return "(no data)";
        }
        try
        {
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            return $"(binary, {bytes.Length} bytes, base64) {Convert.ToBase64String(bytes)}";
        }
    }
}
