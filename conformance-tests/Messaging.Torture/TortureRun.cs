using System.Diagnostics;
using System.Globalization;
using System.Text;
using CloudNative.CloudEvents;
using Messaging.Aws;
using Messaging.DeadLetters;
using Messaging.Hosting;
using Messaging.PubSub;
using Messaging.Publishing;
using Messaging.RabbitMQ;
using Messaging.ServiceBus;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Messaging.Torture;

/// <summary>
/// The torture run: per transport, N events are published while the consumer process is killed with SIGKILL three times
/// and the broker suffers one fault; then every published event must have been handled or dead-lettered. Prints one row
/// per transport and fails (exit code 1) on any loss.
/// </summary>
internal static class TortureRun
{
    private static readonly double[] KillPoints = [0.20, 0.40, 0.60];
    private const double BrokerFaultPoint = 0.80;
    private const int BatchSize = 100;
    private static readonly TimeSpan QuietLimit = TimeSpan.FromSeconds(180);
    private static readonly TimeSpan RunLimit = TimeSpan.FromMinutes(10);

    public static async Task<int> RunAsync(string[] args)
    {
        var transports = new[] { "RabbitMQ", "PubSub", "SnsSqs", "ServiceBus" }.ToList();
        var events = 50_000;
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--transports" when i + 1 < args.Length:
                    transports = args[++i].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
                    break;
                case "--events" when i + 1 < args.Length:
                    events = int.Parse(args[++i], CultureInfo.InvariantCulture);
                    break;
                default:
                    Console.Error.WriteLine("Usage: Messaging.Torture [--transports RabbitMQ,PubSub,SnsSqs,ServiceBus] [--events 50000]");
                    return 2;
            }
        }
        var rows = new List<Row>();
        foreach (var transport in transports)
        {
            using var limit = new CancellationTokenSource(RunLimit);
            Row row;
            try
            {
                row = await RunOneAsync(transport, events, limit.Token);
            }
            catch (Exception ex)
            {
                Console.Error.WriteLine($"torture: {transport} failed: {ex}");
                row = new Row(transport, 0, 0, 0, 0, events, 0, "run failed: " + ex.Message);
            }
            rows.Add(row);
            Console.WriteLine($"torture: {row.Transport}: published {row.Published}, handled {row.UniqueHandled} (+{row.Duplicates} duplicates), dead-lettered {row.DeadLettered}, lost {row.Lost}");
        }
        Console.WriteLine();
        Console.WriteLine("| transport | published | unique handled | duplicates | dead-lettered | lost | consumer kills (SIGKILL) | broker fault | seconds |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var row in rows)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {row.Transport} | {row.Published:N0} | {row.UniqueHandled:N0} | {row.Duplicates:N0} | {row.DeadLettered:N0} | {row.Lost:N0} | {row.Kills} | {row.Fault} | {row.Seconds:0} |"));
        }
        var failed = rows.Where(r => r.Lost > 0 || r.Published < events).ToList();
        Console.WriteLine(failed.Count == 0
            ? $"torture: {rows.Count} transport(s), nothing lost"
            : $"torture: FAILED on {string.Join(", ", failed.Select(r => r.Transport))}");
        return failed.Count == 0 ? 0 : 1;
    }

    private sealed record Row(string Transport, int Published, int UniqueHandled, int Duplicates, int DeadLettered, int Lost, int Kills, string Fault, double Seconds = 0);

    private static async Task<Row> RunOneAsync(string transport, int events, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        await using var broker = await TortureBroker.StartAsync(transport, cancellationToken);
        var run = Guid.NewGuid().ToString("N")[..8];
        var topic = $"torture-{run}";
        var subscription = topic + "-sub";
        var directory = Directory.CreateTempSubdirectory("messaging-torture-");
        var consumers = new List<Consumer>();
        try
        {
            Console.WriteLine($"torture: {transport}: consumer 1 starting");
            var first = Consumer.Start(transport, 1, directory.FullName, broker.ConsumerSettings(topic));
            consumers.Add(first);
            await first.Ready.WaitAsync(TimeSpan.FromSeconds(120), cancellationToken); // it provisions the subscription

            using var publisherHost = BuildPublisher(broker.PublisherSettings(topic), topic);
            await publisherHost.StartAsync(cancellationToken);
            var publisher = publisherHost.Services.GetRequiredService<IEventPublisher>();
            var published = 0;
            var publishing = Task.Run(async () =>
            {
                while (published < events)
                {
                    var batch = Enumerable.Range(published, Math.Min(BatchSize, events - published)).Select(i => Event(run, i)).ToList();
                    await PublishWithRetryAsync(publisher, topic, batch, cancellationToken);
                    Volatile.Write(ref published, published + batch.Count);
                }
            }, cancellationToken);

            // Faults are placed by how far the consumers got, so that each kill hits a consumer in the middle of its work:
            // kills at 20%, 40% and 60% of the events handled, the broker fault at 80%.
            var expected = Enumerable.Range(0, events).Select(i => Id(run, i)).ToHashSet(StringComparer.Ordinal);
            var store = publisherHost.Services.GetRequiredService<IDeadLetterStore>();
            var handled = new HandledFiles(directory.FullName);
            var deadLettered = new HashSet<string>(StringComparer.Ordinal);
            var kills = 0;
            var faulted = false;
            Task fault = Task.CompletedTask;
            var lastProgress = Stopwatch.StartNew();
            var lastCount = -1;
            while (true)
            {
                handled.Refresh();
                var progress = (double)handled.Unique.Count / events;
                if (kills < KillPoints.Length && progress >= KillPoints[kills])
                {
                    kills++;
                    var victim = consumers[^1];
                    victim.Kill();
                    Console.WriteLine($"torture: {transport}: consumer {victim.Number} killed with SIGKILL at {handled.Unique.Count:N0} handled, {Volatile.Read(ref published):N0} published");
                    consumers.Add(Consumer.Start(transport, consumers.Count + 1, directory.FullName, broker.ConsumerSettings(topic)));
                }
                if (!faulted && progress >= BrokerFaultPoint)
                {
                    faulted = true;
                    Console.WriteLine($"torture: {transport}: {broker.FaultName} at {handled.Unique.Count:N0} handled");
                    fault = broker.FaultAsync(cancellationToken);
                }
                if (handled.Unique.Count != lastCount)
                {
                    lastCount = handled.Unique.Count;
                    lastProgress.Restart();
                }
                if (publishing.IsCompleted && expected.IsSubsetOf(handled.Unique))
                {
                    break;
                }
                if (consumers[^1].HasExited)
                {
                    Console.WriteLine($"torture: {transport}: consumer {consumers[^1].Number} exited by itself; starting another");
                    consumers.Add(Consumer.Start(transport, consumers.Count + 1, directory.FullName, broker.ConsumerSettings(topic)));
                }
                if (publishing.IsFaulted || (publishing.IsCompleted && lastProgress.Elapsed > QuietLimit))
                {
                    // What is not handled may be on its way to the dead letters (a broker's own delivery limit): wait for it there,
                    // as long again at the most.
                    Console.WriteLine($"torture: {transport}: no handling for {lastProgress.Elapsed.TotalSeconds:0} s; looking in the dead letters");
                    var looking = Stopwatch.StartNew();
                    while (true)
                    {
                        foreach (var dead in await store.PeekAsync(subscription, 100_000, cancellationToken))
                        {
                            if (dead.Event?.Id is { } id)
                            {
                                deadLettered.Add(id);
                            }
                        }
                        handled.Refresh();
                        if (expected.IsSubsetOf(handled.Unique.Union(deadLettered)) || looking.Elapsed > QuietLimit || publishing.IsFaulted)
                        {
                            break;
                        }
                        await Task.Delay(TimeSpan.FromSeconds(2), cancellationToken);
                    }
                    break;
                }
                await Task.Delay(TimeSpan.FromMilliseconds(200), cancellationToken);
            }
            await publishing;
            await fault;
            handled.Refresh();
            var lost = expected.Count(id => !handled.Unique.Contains(id) && !deadLettered.Contains(id));
            await publisherHost.StopAsync(CancellationToken.None);
            handled.Dispose();
            return new Row(transport, published, expected.Count(handled.Unique.Contains), handled.Lines - handled.Unique.Count, deadLettered.Count, lost, kills, broker.FaultName,
                watch.Elapsed.TotalSeconds);
        }
        finally
        {
            foreach (var consumer in consumers)
            {
                consumer.Kill();
            }
            await broker.CleanUpAsync(topic);
            directory.Delete(recursive: true);
        }
    }

    private static async Task PublishWithRetryAsync(IEventPublisher publisher, string topic, List<CloudEvent> batch, CancellationToken cancellationToken)
    {
        var attempts = 0;
        while (true)
        {
            try
            {
                await publisher.PublishBatchAsync(topic, batch, cancellationToken);
                return;
            }
            catch (EventPublishException ex) when (++attempts < 60)
            {
                // The broker is restarting: publish the batch again (what was stored twice is a duplicate, never a loss).
                Console.WriteLine($"torture: publish failed ({(ex.IsTransient ? "transient" : "permanent")}: {ex.InnerException?.Message ?? ex.Message}); again in 1 s");
                await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken);
            }
        }
    }

    /// <summary>The consumers' records, read as they grow: what was handled, and how often.</summary>
    private sealed class HandledFiles(string directory) : IDisposable
    {
        private readonly Dictionary<string, StreamReader> _readers = new(StringComparer.Ordinal);

        public HashSet<string> Unique { get; } = new(StringComparer.Ordinal);

        public int Lines { get; private set; }

        public void Refresh()
        {
            foreach (var file in Directory.EnumerateFiles(directory, "handled-*.txt"))
            {
                if (!_readers.TryGetValue(file, out var reader))
                {
                    reader = new StreamReader(new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite));
                    _readers[file] = reader;
                }
                // Only whole lines count: a line being written has no newline yet.
                while (reader.ReadLine() is { } line)
                {
                    if (line.Length > 0)
                    {
                        Lines++;
                        Unique.Add(line);
                    }
                }
            }
        }

        public void Dispose()
        {
            foreach (var reader in _readers.Values)
            {
                reader.Dispose();
            }
        }
    }

    private static string Id(string run, int i) => $"{run}-{i}";

    private static CloudEvent Event(string run, int i) => new()
    {
        Id = Id(run, i),
        Source = new Uri("urn:messaging:torture"),
        Type = "com.example.torture",
        DataContentType = "application/json",
        Data = Encoding.UTF8.GetBytes($"{{\"n\":{i}}}"),
    };

    private static IHost BuildPublisher(Dictionary<string, string?> settings, string topic)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(settings);
        builder.Logging.AddSimpleConsole(o => o.SingleLine = true).AddFilter(level => level >= LogLevel.Error);
        builder.Services.AddMessaging(builder.Configuration)
            .AddRabbitMq()
            .AddPubSub()
            .AddSnsSqs()
            .AddServiceBus()
            .AddTopic(topic);
        return builder.Build();
    }

    /// <summary>A consumer process: started with the transport's settings, killed with SIGKILL.</summary>
    private sealed class Consumer
    {
        private readonly Process _process;
        private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);

        private Consumer(Process process, int number)
        {
            _process = process;
            Number = number;
        }

        public int Number { get; }

        public Task Ready => _ready.Task;

        public bool HasExited => _process.HasExited;

        public static Consumer Start(string transport, int number, string directory, Dictionary<string, string?> settings)
        {
            var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            start.ArgumentList.Add(typeof(TortureRun).Assembly.Location);
            start.ArgumentList.Add("consume");
            start.ArgumentList.Add($"--Torture:Output={Path.Combine(directory, $"handled-{number}.txt")}");
            foreach (var (key, value) in settings)
            {
                start.ArgumentList.Add($"--{key}={value}");
            }
            var process = Process.Start(start) ?? throw new InvalidOperationException("Could not start a consumer process.");
            var consumer = new Consumer(process, number);
            process.OutputDataReceived += (_, e) =>
            {
                if (e.Data == "ready")
                {
                    consumer._ready.TrySetResult();
                }
            };
            process.ErrorDataReceived += (_, e) =>
            {
                if (!string.IsNullOrEmpty(e.Data))
                {
                    Console.Error.WriteLine($"  [{transport} consumer {number}] {e.Data}");
                }
            };
            process.Exited += (_, _) => consumer._ready.TrySetException(new InvalidOperationException($"consumer {number} exited with {process.ExitCode}"));
            process.EnableRaisingEvents = true;
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            return consumer;
        }

        public void Kill()
        {
            try
            {
                if (!_process.HasExited)
                {
                    _process.Kill(entireProcessTree: true); // SIGKILL: no stop, no settlement, no flush
                    _process.WaitForExit(10_000);
                }
            }
            catch (InvalidOperationException)
            {
                // Already gone.
            }
        }
    }
}
