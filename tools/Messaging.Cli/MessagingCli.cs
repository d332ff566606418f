using System.CommandLine;
using System.CommandLine.Help;
using Spectre.Console;

namespace Messaging.Cli;

/// <summary>
/// The <c>messaging</c> command line: parses the arguments, runs one command and returns its exit code (<see cref="ExitCodes"/>).
/// Output goes to the console; errors go to the error writer as one line <c>messaging: error: ...</c>.
/// </summary>
internal static class MessagingCli
{
    public const int PeekLimit = 10_000;

    /// <summary>Runs with errors written to stderr.</summary>
    public static Task<int> RunAsync(string[] args, IAnsiConsole console, CancellationToken cancellationToken) =>
        RunAsync(args, console, Console.Error, cancellationToken);

    public static async Task<int> RunAsync(string[] args, IAnsiConsole console, TextWriter error, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(console);
        ArgumentNullException.ThrowIfNull(error);
        try
        {
            var (rest, overrides) = CliConfiguration.SplitOverrides(args);
            var context = new CliContext(console, overrides);
            var root = BuildCommands(context);
            var parsed = root.Parse(rest);
            if (parsed.Errors.Count > 0)
            {
                throw new CliException(ExitCodes.UsageError, $"{parsed.Errors[0].Message} (see messaging --help)");
            }
            var output = console.Profile.Out.Writer;
            return await parsed.InvokeAsync(new InvocationConfiguration { Output = output, Error = error, EnableDefaultExceptionHandler = false }, cancellationToken)
                .ConfigureAwait(false);
        }
        catch (CliException ex)
        {
            await error.WriteLineAsync($"messaging: error: {ex.Message}").ConfigureAwait(false);
            return ex.ExitCode;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            await error.WriteLineAsync("messaging: cancelled").ConfigureAwait(false);
            return ExitCodes.Cancelled;
        }
    }

    internal static Command BuildCommands(CliContext context)
    {
        var settings = new Option<string>("--settings", "-s")
        {
            Description = "The service's settings file (default: appsettings.json of the current directory, when there is one). " +
                          "Environment variables (Messaging__Transport) and --Messaging:Key=value arguments override it.",
            HelpName = "appsettings.json",
            Recursive = true,
        };
        // Named as the installed tool's command, whatever the assembly is called.
        var root = new Command("messaging",
            "Operate the messaging of a service: dead letters, topology and publishing, on the broker its configuration selects " +
            "(Messaging:Transport: RabbitMQ, PubSub, SnsSqs, ServiceBus). Any setting can be given as --Messaging:Key=value. " +
            ExitCodes.Help);
        root.Options.Add(new HelpOption());
        root.Options.Add(new VersionOption());
        root.Options.Add(settings);

        var subscription = new Argument<string>("subscription") { Description = "The subscription whose dead letters to read." };

        // dlq list
        var max = new Option<int>("--max") { Description = "Most dead letters to show.", DefaultValueFactory = _ => 100 };
        var list = new Command("list", "List the dead letters of a subscription (without removing them).") { subscription, max };
        list.SetAction((parse, ct) => context.RunAsync(parse.GetValue(settings), (session, token) =>
            DeadLetterCommands.ListAsync(context, session, parse.GetValue(subscription)!, parse.GetValue(max), token), ct, parse.GetValue(subscription)));

        // dlq show
        var eventId = new Argument<string>("event-id") { Description = "The event's id (or the dead-letter id that list shows)." };
        var show = new Command("show", "Show one dead letter: its CloudEvent attributes, the dead-letter metadata and the data.") { subscription, eventId };
        show.SetAction((parse, ct) => context.RunAsync(parse.GetValue(settings), (session, token) =>
            DeadLetterCommands.ShowAsync(context, session, parse.GetValue(subscription)!, parse.GetValue(eventId)!, token), ct, parse.GetValue(subscription)));

        // dlq replay / purge share the selectors
        Option<string[]> Ids() => new("--id") { Description = "Take the dead letter with this event id or dead-letter id (repeatable).", AllowMultipleArgumentsPerToken = false };
        Option<string[]> Types() => new("--type") { Description = "Take the dead letters of this CloudEvent type (repeatable)." };
        Option<string[]> Reasons() => new("--reason")
        {
            Description = "Take the dead letters dead-lettered for this reason (repeatable): " + string.Join(", ", Enum.GetNames<DeadLetters.DeadLetterReason>()) + ".",
        };
        Option<bool> All() => new("--all") { Description = "Take every dead letter of the subscription." };
        Option<bool> DryRun() => new("--dry-run") { Description = "Only show what would be taken; change nothing." };

        var replayIds = Ids();
        var replayTypes = Types();
        var replayReasons = Reasons();
        var replayAll = All();
        var replayDry = DryRun();
        var replay = new Command("replay", "Move the selected dead letters back to their subscription, where they are delivered again from attempt 1.")
        {
            subscription, replayIds, replayTypes, replayReasons, replayAll, replayDry,
        };
        replay.SetAction((parse, ct) =>
        {
            var selection = DeadLetterSelection.Parse(parse.GetValue(replayIds), parse.GetValue(replayTypes), parse.GetValue(replayReasons), parse.GetValue(replayAll));
            return context.RunAsync(parse.GetValue(settings), (session, token) =>
                DeadLetterCommands.ReplayAsync(context, session, parse.GetValue(subscription)!, selection, parse.GetValue(replayDry), token), ct, parse.GetValue(subscription));
        });

        var purgeIds = Ids();
        var purgeTypes = Types();
        var purgeReasons = Reasons();
        var purgeAll = All();
        var purgeDry = DryRun();
        var yes = new Option<bool>("--yes", "-y") { Description = "Confirm: the selected dead letters are deleted for good." };
        var purge = new Command("purge", "Delete the selected dead letters for good (needs --yes).")
        {
            subscription, purgeIds, purgeTypes, purgeReasons, purgeAll, purgeDry, yes,
        };
        purge.SetAction((parse, ct) =>
        {
            var selection = DeadLetterSelection.Parse(parse.GetValue(purgeIds), parse.GetValue(purgeTypes), parse.GetValue(purgeReasons), parse.GetValue(purgeAll));
            return context.RunAsync(parse.GetValue(settings), (session, token) =>
                DeadLetterCommands.PurgeAsync(context, session, parse.GetValue(subscription)!, selection, parse.GetValue(purgeDry), parse.GetValue(yes), token), ct, parse.GetValue(subscription));
        });

        var dlq = new Command("dlq", "Read, replay and purge the dead letters of a subscription.") { list, show, replay, purge };
        root.Subcommands.Add(dlq);

        // topology provision
        var extraTopics = new Option<string[]>("--topic") { Description = "Also create this topic (repeatable)." };
        var provision = new Command("provision",
            "Create the topics, subscriptions and dead-letter destinations that configuration declares (Messaging:Subscriptions:{name}:Topic), " +
            "with their retry settings, plus every --topic; idempotent.") { extraTopics };
        provision.SetAction((parse, ct) => context.RunAsync(parse.GetValue(settings), (session, token) =>
            TopologyCommands.ProvisionAsync(context, session, parse.GetValue(extraTopics) ?? [], token), ct));
        root.Subcommands.Add(new Command("topology", "Provision the broker's topology.") { provision });

        // publish
        var topic = new Option<string>("--topic", "-t") { Description = "The topic to publish to.", Required = true };
        var file = new Option<string>("--file", "-f") { Description = "A structured-mode CloudEvent in JSON (application/cloudevents+json).", Required = true, HelpName = "event.json" };
        var publish = new Command("publish", "Publish one CloudEvent read from a file.") { topic, file };
        publish.SetAction((parse, ct) =>
        {
            var events = PublishCommand.Read(parse.GetValue(file)!);
            return context.RunAsync(parse.GetValue(settings), (session, token) =>
                PublishCommand.PublishAsync(context, session, parse.GetValue(topic)!, events, token), ct);
        });
        root.Subcommands.Add(publish);
        return root;
    }
}
