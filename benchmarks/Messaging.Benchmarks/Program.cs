// Benchmarks.
//   harness: throughput and latency of this library against each broker's raw client (and MassTransit on RabbitMQ).
//     dotnet run -c Release --project benchmarks/Messaging.Benchmarks -- harness [--transport inmemory|rabbitmq|pubsub|all] [--rounds 3] [--smoke]
//   outbox: outbox publish throughput (SQLite, PostgreSQL) against direct publish, inbox handling against plain handling.
//     dotnet run -c Release --project benchmarks/Messaging.Benchmarks -- outbox [--transport inmemory|rabbitmq] [--events 5000] [--writers 8] [--smoke]
//   micro: BenchmarkDotNet micro-benchmarks of the per-event hot paths (encode/decode per wire mapping, dispatch).
//     dotnet run -c Release --project benchmarks/Messaging.Benchmarks -- micro [BenchmarkDotNet arguments, e.g. --filter *]
using System.Globalization;
using BenchmarkDotNet.Running;
using Messaging.Benchmarks.Harness;
using Messaging.Benchmarks.Outbox;
using Messaging.InMemory;
using Messaging.PubSub;
using Messaging.RabbitMQ;
using Microsoft.Extensions.DependencyInjection;
using RabbitMQ.Client;

if (args.Length > 0 && args[0] == "micro")
{
    BenchmarkSwitcher.FromAssembly(typeof(HarnessRunner).Assembly).Run(args[1..]);
    return 0;
}

string Option(string name, string fallback)
{
    var index = Array.IndexOf(args, name);
    return index >= 0 && index + 1 < args.Length ? args[index + 1] : fallback;
}

var smoke = args.Contains("--smoke");
// --set Key=Value (repeatable) overrides this library's settings, e.g. --set Messaging:RabbitMQ:PublisherChannels=2
// or --set Subscription:Concurrency=4; without it the library runs with its defaults.
var librarySettings = args.Select((a, i) => (a, i)).Where(x => x.a == "--set" && x.i + 1 < args.Length)
    .Select(x => args[x.i + 1].Split('=', 2)).ToDictionary(kv => kv[0], kv => (string?)kv[1]);
var transport = Option("--transport", "all").ToLowerInvariant();
var rounds = int.Parse(Option("--rounds", smoke ? "1" : "3"), CultureInfo.InvariantCulture);
var rabbitUri = Environment.GetEnvironmentVariable("MESSAGING_RABBITMQ_URI") ?? "amqp://guest:guest@127.0.0.1:5672/";
var pubsubHost = Environment.GetEnvironmentVariable("PUBSUB_EMULATOR_HOST") ?? "127.0.0.1:8085";
var pubsubProject = Environment.GetEnvironmentVariable("MESSAGING_PUBSUB_PROJECT") ?? "conformance-project";
using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(smoke ? 5 : 30));

if (args.Length > 0 && args[0] == "outbox")
{
    async Task DeleteRabbitQueues(string topic)
    {
        await using var connection = await new ConnectionFactory { Uri = new Uri(rabbitUri) }.CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        foreach (var queue in new[] { topic + "-sub", topic + "-sub.dead-letter" })
        {
            await channel.QueueDeleteAsync(queue, false, false);
        }
        await channel.ExchangeDeleteAsync(topic, false);
    }
    var onRabbit = Option("--transport", "inmemory").Equals("rabbitmq", StringComparison.OrdinalIgnoreCase);
    var postgres = Environment.GetEnvironmentVariable("MESSAGING_POSTGRES") is { Length: > 0 } pg
        ? pg : "Host=127.0.0.1;Port=5432;Username=messaging;Password=messaging;Database=messaging_tests";
    var benchmark = new OutboxBenchmark(
        onRabbit ? RabbitMqTransport.TransportName : InMemoryTransport.TransportName,
        m => { if (onRabbit) { m.AddRabbitMq(o => o.Uri = rabbitUri); } },
        topic => onRabbit ? DeleteRabbitQueues(topic) : Task.CompletedTask,
        postgres,
        events: int.Parse(Option("--events", smoke ? "300" : "5000"), CultureInfo.InvariantCulture),
        writers: int.Parse(Option("--writers", "8"), CultureInfo.InvariantCulture));
    Console.WriteLine(await benchmark.RunAsync(cts.Token));
    return 0;
}

// --latency-load F: the latency scenario's rate as a fraction of the slowest target's end-to-end maximum (default 0.5).
var latencyLoad = double.Parse(Option("--latency-load", "0.5"), CultureInfo.InvariantCulture);
if (latencyLoad is <= 0 or > 1)
{
    Console.Error.WriteLine($"--latency-load must be in (0, 1], not {latencyLoad}.");
    return 2;
}
var sizes = Option("--sizes", "1024,65536").Split(',').Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToArray();
HarnessSettings Settings(int smallCount, int largeCount) => smoke
    ? new HarnessSettings(1, [1024, 64 * 1024], size => size > 1024 ? 50 : 200, TimeSpan.FromMilliseconds(300), 0.5, WaitForIdleBroker: false)
    : new HarnessSettings(rounds, sizes, size => size > 1024 ? largeCount : smallCount, TimeSpan.FromSeconds(3), latencyLoad, PublishOnly: args.Contains("--publish-only"), SpinPacing: args.Contains("--spin-pacing"));

Console.WriteLine($"# Benchmark harness{(smoke ? " (smoke mode: tiny counts, numbers not meaningful)" : "")}");
Console.WriteLine();
Console.WriteLine($"Machine: {Environment.ProcessorCount} cores, {Environment.OSVersion}, .NET {Environment.Version}; medians of {(smoke ? 1 : rounds)} round(s); latency at 50% of the slowest target's end-to-end maximum.");
Console.WriteLine();

if (transport is "all" or "inmemory")
{
    var targets = new IBenchTarget[]
    {
        new ChannelTarget(),
        new LibraryTarget(InMemoryTransport.TransportName, _ => { }, _ => Task.CompletedTask, librarySettings),
    };
    // Publish-only fills the queue with nobody reading: counts stay below the in-memory queue capacity (100,000).
    Console.WriteLine(await new HarnessRunner("In-memory", Only(targets), Settings(50_000, 5_000)).RunAsync(cts.Token));
}

if (transport is "all" or "rabbitmq")
{
    async Task DeleteRabbitTopology(string topic)
    {
        await using var connection = await new ConnectionFactory { Uri = new Uri(rabbitUri) }.CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        await channel.QueueDeleteAsync(topic + "-sub", false, false);
        await channel.QueueDeleteAsync(topic + "-sub.dead-letter", false, false);
        foreach (var ms in new[] { 1000, 2000, 4000, 8000 })
        {
            await channel.QueueDeleteAsync(RabbitMqNames.RetryQueue(topic + "-sub", TimeSpan.FromMilliseconds(ms)), false, false);
        }
        await channel.ExchangeDeleteAsync(topic, false);
    }
    var targets = new IBenchTarget[]
    {
        new RawRabbitMqTarget(rabbitUri, cloudEventHeaders: true),
        new LibraryTarget(RabbitMqTransport.TransportName, m => m.AddRabbitMq(o => o.Uri = rabbitUri), DeleteRabbitTopology, librarySettings),
        new MassTransitTarget(rabbitUri),
        // For reference: the raw client sending less than a CloudEvent (no attributes at all).
        new RawRabbitMqTarget(rabbitUri, cloudEventHeaders: false),
    };
    Console.WriteLine(await new HarnessRunner("RabbitMQ (quorum queues, confirms)", Only(targets), Settings(20_000, 2_000), brokerProcess: "beam.smp").RunAsync(cts.Token));
    foreach (var t in targets)
    {
        await t.DisposeAsync();
    }
}

if (transport is "all" or "pubsub")
{
    var targets = new IBenchTarget[]
    {
        new RawPubSubTarget(pubsubHost, pubsubProject),
        new LibraryTarget(PubSubTransport.TransportName, m =>
        {
            m.AddPubSub();
            m.Services.Configure<PubSubTransportOptions>(o =>
            {
                o.ProjectId = pubsubProject;
                o.EmulatorHost = pubsubHost;
            });
        }, topic => RawPubSubTarget.DeleteAsync(pubsubHost, pubsubProject, topic, topic + "-sub"), librarySettings,
            // As many unconfirmed as the raw target keeps: 8 requests of 100.
            window: 800),
    };
    Console.WriteLine(await new HarnessRunner("Google Pub/Sub (emulator)", Only(targets), Settings(10_000, 1_000), brokerProcess: "java").RunAsync(cts.Token));
    foreach (var t in targets)
    {
        await t.DisposeAsync();
    }
}
return 0;

// --only "this library" (or another target's name) runs one target alone, e.g. under a profiler; names separated by
// '|' run those targets against each other.
IBenchTarget[] Only(IBenchTarget[] targets)
{
    var only = Option("--only", "");
    return only.Length == 0 ? targets : targets.Where(t => only.Split('|').Contains(t.Name)).ToArray();
}
