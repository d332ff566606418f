using Spectre.Console;

namespace Messaging.Cli;

/// <summary><c>messaging topology provision</c>.</summary>
internal static class TopologyCommands
{
    public static async Task<int> ProvisionAsync(CliContext context, CliSession session, string[] extraTopics, CancellationToken cancellationToken)
    {
        var topology = session.Topology(extraTopics);
        if (topology.Topics.Count == 0 && topology.Subscriptions.Count == 0)
        {
            throw new CliException(ExitCodes.UsageError,
                "nothing to provision: configuration declares no Messaging:Subscriptions:{name}:Topic and no --topic was given.");
        }
        var console = context.Console;
        await console.Status().StartAsync($"Provisioning on {session.Transport.Name}...", _ =>
            session.Transport.ProvisionAsync(topology, cancellationToken)).ConfigureAwait(false);

        var table = new Table().AddColumn("Kind").AddColumn("Name").AddColumn("Topic").AddColumn("Max attempts");
        foreach (var topic in topology.Topics)
        {
            table.AddRow(new Text("topic"), new Text(topic), new Text(""), new Text(""));
        }
        foreach (var subscription in topology.Subscriptions)
        {
            table.AddRow(new Text("subscription"), new Text(subscription.Name), new Text(subscription.Topic),
                new Text(subscription.Retry.MaxAttempts.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        }
        console.Write(table);
        console.WriteLine($"Provisioned {topology.Topics.Count} topic(s) and {topology.Subscriptions.Count} subscription(s) on {session.Transport.Name}.");
        foreach (var name in CliConfiguration.SubscriptionsWithoutTopic(session.Configuration))
        {
            console.WriteLine($"Skipped subscription {name}: configuration gives it no Topic (its service declares it in code).");
        }
        return ExitCodes.Success;
    }
}
