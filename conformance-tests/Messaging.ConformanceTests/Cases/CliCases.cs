using System.Text.Json.Nodes;
using Messaging.Cli;
using Messaging.ConformanceTests.Infrastructure;
using Spectre.Console;

namespace Messaging.ConformanceTests.Cases;

/// <summary>
/// The <c>messaging</c> command-line tool against each broker, run in-process with the configuration a separate process would
/// use (<see cref="ITransportFixture.ProcessSettings"/>, written to a settings file): dead letters made by a failing handler
/// are listed, shown, replayed one by one and purged; topology is provisioned from configuration; a structured CloudEvent is
/// published from a file; bad input gives the documented exit code and a message that names the problem. The in-memory
/// broker cannot be reached from another process, so these cases are unsupported there.
/// </summary>
public abstract partial class ConformanceSuite<TFixture>
{
    private sealed record CliRun(int ExitCode, string Output, string Error)
    {
        public override string ToString() => $"exit {ExitCode}; stdout: {Output}; stderr: {Error}";
    }

    /// <summary>Writes the fixture's process settings as an appsettings.json of a fresh folder; null where no process can reach the broker.</summary>
    private string? CliSettingsFile()
    {
        if (Fixture.ProcessSettings is not { } settings)
        {
            return null;
        }
        var root = new JsonObject();
        foreach (var (key, value) in settings)
        {
            var node = root;
            var parts = key.Split(':');
            foreach (var part in parts[..^1])
            {
                node = (JsonObject)(node[part] ??= new JsonObject());
            }
            node[parts[^1]] = value;
        }
        var folder = Directory.CreateTempSubdirectory("messaging-cli-");
        var path = Path.Combine(folder.FullName, "appsettings.json");
        File.WriteAllText(path, root.ToJsonString());
        return path;
    }

    private static async Task<CliRun> CliAsync(string settingsFile, params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(output),
        });
        console.Profile.Width = 400;
        var code = await MessagingCli.RunAsync([.. args, "--settings", settingsFile], console, error, Ct);
        return new CliRun(code, output.ToString(), error.ToString());
    }

    private static void AssertExit(int expected, CliRun run) => Assert.True(run.ExitCode == expected, $"expected exit {expected}, got {run}");

    /// <summary>A host whose handler fails every event not healed yet, one attempt each, and the events it dead-lettered.</summary>
    private async Task<(ConformanceHost Host, Probe Probe, HashSet<string> Heal, List<CloudNative.CloudEvents.CloudEvent> Events)> DeadLettersForCliAsync(
        string topic, string sub, int count)
    {
        var heal = new HashSet<string>();
        var probe = new Probe
        {
            Behaviour = (c, _) =>
            {
                lock (heal)
                {
                    return heal.Contains(c.Event.Id!) ? Task.CompletedTask : throw new InvalidOperationException("fails until healed");
                }
            },
        };
        var host = await StartWithLongLeasesAsync(probe, Subscribe(topic, sub, s => s.WithMaxAttempts(1)));
        var events = Enumerable.Range(0, count).Select(_ => NewEvent()).ToList();
        await host.Publisher.PublishBatchAsync(topic, events, Ct);
        await Wait.UntilAsync(() => host.DeadLetters.PeekAsync(sub, 10, Ct), d => d.Count == count, $"{count} events are dead-lettered", TimeSpan.FromSeconds(60));
        return (host, probe, heal, events);
    }

    [Fact(Timeout = 180_000)]
    public Task Cli_dlq_list_show_and_replay_one_chosen_dead_letter() => Case(async () =>
    {
        if (CliSettingsFile() is not { } settings)
        {
            DeclaredUnsupported();
            return;
        }
        var (topic, sub) = Names();
        var (host, probe, heal, events) = await DeadLettersForCliAsync(topic, sub, 3);
        await using var _ = host;

        var list = await CliAsync(settings, "dlq", "list", sub);
        AssertExit(0, list);
        foreach (var sent in events)
        {
            Assert.True(list.Output.Contains(sent.Id!, StringComparison.Ordinal), $"list should show {sent.Id}: {list}");
        }
        Assert.Contains("3 dead letter(s)", list.Output, StringComparison.Ordinal);
        Assert.Contains("MaxAttemptsExceeded", list.Output, StringComparison.Ordinal);

        var chosen = events[1];
        var show = await CliAsync(settings, "dlq", "show", sub, chosen.Id!);
        AssertExit(0, show);
        Assert.Contains(chosen.Id!, show.Output, StringComparison.Ordinal);
        Assert.Contains("com.example.conformance", show.Output, StringComparison.Ordinal);
        Assert.Contains("deadletter-reason", show.Output, StringComparison.Ordinal);
        Assert.Contains("fails until healed", show.Output, StringComparison.Ordinal);
        Assert.Contains($"payload {chosen.Id}", show.Output, StringComparison.Ordinal);

        var dry = await CliAsync(settings, "dlq", "replay", sub, "--id", chosen.Id!, "--dry-run");
        AssertExit(0, dry);
        Assert.Contains("Would replay 1", dry.Output, StringComparison.Ordinal);
        Assert.Equal(3, (await host.DeadLetters.PeekAsync(sub, 10, Ct)).Count);

        lock (heal)
        {
            heal.Add(chosen.Id!);
        }
        var replay = await CliAsync(settings, "dlq", "replay", sub, "--id", chosen.Id!);
        AssertExit(0, replay);
        Assert.Contains("Replayed 1 dead letter(s)", replay.Output, StringComparison.Ordinal);
        await Wait.UntilAsync(() => probe.Handled.Any(h => h.Event.Id == chosen.Id), "the replayed event is delivered again and handled", TimeSpan.FromSeconds(60));
        Assert.Equal(1, probe.Handled.Single(h => h.Event.Id == chosen.Id).Attempt);
        var left = await host.DeadLetters.PeekAsync(sub, 10, Ct);
        Assert.Equal(events.Where(e => e.Id != chosen.Id).Select(e => e.Id).Order(), left.Select(d => d.Event!.Id).Order());

        // The chosen one is gone from the dead letters: asking for it again is "not found".
        var again = await CliAsync(settings, "dlq", "replay", sub, "--id", chosen.Id!);
        AssertExit(3, again);
        Assert.Contains(sub, again.Error, StringComparison.Ordinal);
    });

    [Fact(Timeout = 180_000)]
    public Task Cli_dlq_purge_needs_yes_and_deletes_only_the_selection() => Case(async () =>
    {
        if (CliSettingsFile() is not { } settings)
        {
            DeclaredUnsupported();
            return;
        }
        var (topic, sub) = Names();
        var (host, probe, _, events) = await DeadLettersForCliAsync(topic, sub, 3);
        await using var _host = host;

        var refused = await CliAsync(settings, "dlq", "purge", sub, "--id", events[0].Id!);
        AssertExit(2, refused);
        Assert.Contains("--yes", refused.Error, StringComparison.Ordinal);
        Assert.Single(refused.Error.Trim().Split('\n'));
        Assert.Equal(3, (await host.DeadLetters.PeekAsync(sub, 10, Ct)).Count);

        var one = await CliAsync(settings, "dlq", "purge", sub, "--id", events[0].Id!, "--yes");
        AssertExit(0, one);
        Assert.Contains("Deleted 1 dead letter(s)", one.Output, StringComparison.Ordinal);
        var left = await host.DeadLetters.PeekAsync(sub, 10, Ct);
        Assert.Equal(events.Skip(1).Select(e => e.Id).Order(), left.Select(d => d.Event!.Id).Order());

        var rest = await CliAsync(settings, "dlq", "purge", sub, "--all", "--yes");
        AssertExit(0, rest);
        Assert.Contains("Deleted 2 dead letter(s)", rest.Output, StringComparison.Ordinal);
        var empty = await CliAsync(settings, "dlq", "list", sub);
        AssertExit(0, empty);
        Assert.Contains("No dead letters", empty.Output, StringComparison.Ordinal);
        Assert.Equal(3, probe.Attempts.Count); // purged, not replayed
    });

    [Fact(Timeout = 180_000)]
    public Task Cli_topology_provision_and_publish_a_structured_event_from_a_file() => Case(async () =>
    {
        if (CliSettingsFile() is not { } settings)
        {
            DeclaredUnsupported();
            return;
        }
        var (topic, sub) = Names();
        // The subscription as configuration declares it, with the policy the host below declares in code.
        string[] declared =
        [
            $"--Messaging:Subscriptions:{sub}:Topic={topic}", $"--Messaging:Subscriptions:{sub}:MaxAttempts=3",
            $"--Messaging:Subscriptions:{sub}:Backoff=Fixed", $"--Messaging:Subscriptions:{sub}:BackoffDelay=00:00:00.100",
        ];
        var provision = await CliAsync(settings, ["topology", "provision", "--topic", topic, .. declared]);
        AssertExit(0, provision);
        Assert.Contains("Provisioned 1 topic(s) and 1 subscription(s)", provision.Output, StringComparison.Ordinal);
        Assert.Contains(sub, provision.Output, StringComparison.Ordinal);

        // Published before any consumer runs: only a provisioned subscription keeps it.
        var id = Guid.NewGuid().ToString();
        var file = Path.Combine(Path.GetDirectoryName(settings)!, "event.json");
        await File.WriteAllTextAsync(file, $$"""
            {
              "specversion": "1.0",
              "id": "{{id}}",
              "source": "urn:conformance:cli",
              "type": "com.example.conformance.cli",
              "datacontenttype": "application/json",
              "data": { "order": 42 }
            }
            """, Ct);
        var publish = await CliAsync(settings, "publish", "--topic", topic, "--file", file);
        AssertExit(0, publish);
        Assert.Contains($"Published {id}", publish.Output, StringComparison.Ordinal);

        var probe = new Probe();
        await using var host = await StartAsync(probe, Subscribe(topic, sub));
        await Wait.UntilAsync(() => probe.Handled.Any(h => h.Event.Id == id), "the event published by the tool is received", TimeSpan.FromSeconds(60));
        var received = probe.Handled.First(h => h.Event.Id == id).Event;
        Assert.Equal("com.example.conformance.cli", received.Type);
        Assert.Equal(new Uri("urn:conformance:cli"), received.Source);
        var data = Messaging.Envelope.CloudEventData.GetBytes(received)!;
        Assert.Equal(42, JsonNode.Parse(data)!["order"]!.GetValue<int>());
    });

    [Fact(Timeout = 120_000)]
    public Task Cli_bad_input_gives_the_documented_exit_code_and_names_the_problem() => Case(async () =>
    {
        if (CliSettingsFile() is not { } settings)
        {
            DeclaredUnsupported();
            return;
        }
        var (_, sub) = Names("unknown");

        var unknownSubscription = await CliAsync(settings, "dlq", "replay", sub, "--all");
        AssertExit(3, unknownSubscription);
        Assert.Contains(sub, unknownSubscription.Error, StringComparison.Ordinal);

        var noSelector = await CliAsync(settings, "dlq", "replay", sub);
        AssertExit(2, noSelector);
        Assert.Contains("--id, --type, --reason or --all", noSelector.Error, StringComparison.Ordinal);

        var folder = Path.GetDirectoryName(settings)!;
        var missing = Path.Combine(folder, "missing.json");
        var missingFile = await CliAsync(settings, "publish", "--topic", "ct-cli", "--file", missing);
        AssertExit(2, missingFile);
        Assert.Contains($"event file not found: {missing}", missingFile.Error, StringComparison.Ordinal);

        var malformed = Path.Combine(folder, "malformed.json");
        await File.WriteAllTextAsync(malformed, "{ \"specversion\": \"1.0\", \"id\": ", Ct);
        var malformedJson = await CliAsync(settings, "publish", "--topic", "ct-cli", "--file", malformed);
        AssertExit(2, malformedJson);
        Assert.Contains($"event file {malformed} is not valid JSON", malformedJson.Error, StringComparison.Ordinal);

        var incomplete = Path.Combine(folder, "incomplete.json");
        await File.WriteAllTextAsync(incomplete, "{ \"specversion\": \"1.0\", \"id\": \"1\", \"source\": \"urn:x\" }", Ct);
        var noType = await CliAsync(settings, "publish", "--topic", "ct-cli", "--file", incomplete);
        AssertExit(2, noType);
        Assert.Contains("type", noType.Error, StringComparison.Ordinal);

        var unknownTransport = await CliAsync(settings, "dlq", "list", sub, "--Messaging:Transport=Carrier-Pigeon");
        AssertExit(2, unknownTransport);
        Assert.Contains("Messaging:Transport is 'Carrier-Pigeon'", unknownTransport.Error, StringComparison.Ordinal);

        foreach (var run in new[] { unknownSubscription, noSelector, missingFile, malformedJson, noType, unknownTransport })
        {
            Assert.True(run.Error.StartsWith("messaging: error: ", StringComparison.Ordinal) && run.Error.Trim().Split('\n').Length == 1,
                $"an error is one line on stderr: {run}");
        }
    });
}
