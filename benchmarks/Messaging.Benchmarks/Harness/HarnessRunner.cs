using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Messaging.Benchmarks.Harness;

/// <param name="PublishOnly">Only the publish-only scenario (for a profiler): no end-to-end or latency runs.</param>
internal sealed record HarnessSettings(int Rounds, IReadOnlyList<int> Sizes, Func<int, int> EventCount, TimeSpan LatencyDuration, double LatencyFraction, bool WaitForIdleBroker = true, bool PublishOnly = false, bool SpinPacing = false);

/// <summary>
/// Runs the same scenarios through every target of one transport, alternating the targets within each round, and
/// prints the median of the rounds with the ratios of this library to the others.
/// </summary>
internal sealed class HarnessRunner(string transport, IReadOnlyList<IBenchTarget> targets, HarnessSettings settings, string? brokerProcess = null)
{
    private readonly CpuMeter _cpu = new(brokerProcess);

    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(3);

    public async Task<string> RunAsync(CancellationToken cancellationToken)
    {
        var table = new StringBuilder();
        table.AppendLine(CultureInfo.InvariantCulture, $"### {transport}");
        table.AppendLine();
        table.Append("| scenario | size |");
        foreach (var t in targets)
        {
            table.Append(CultureInfo.InvariantCulture, $" {t.Name} |");
        }
        var ours = targets.ToList().FindIndex(t => t.Name == "this library");
        var others = ours < 0 ? [] : Enumerable.Range(0, targets.Count).Where(i => i != ours).ToList();
        foreach (var i in others)
        {
            table.Append(CultureInfo.InvariantCulture, $" ours / {targets[i].Name} |");
        }
        table.AppendLine();
        table.AppendLine("|---|---|" + string.Concat(Enumerable.Repeat("---|", targets.Count + others.Count)));

        foreach (var size in settings.Sizes)
        {
            var count = settings.EventCount(size);
            var publish = new List<double>[targets.Count];
            var endToEnd = new List<double>[targets.Count];
            var clientCpu = new List<double>[targets.Count];
            var workItems = new List<double>[targets.Count];
            var brokerCpu = new List<double>[targets.Count];
            var publishAllocated = new List<double>[targets.Count];
            var endToEndAllocated = new List<double>[targets.Count];
            for (var i = 0; i < targets.Count; i++)
            {
                publishAllocated[i] = [];
                endToEndAllocated[i] = [];
                publish[i] = [];
                endToEnd[i] = [];
                clientCpu[i] = [];
                workItems[i] = [];
                brokerCpu[i] = [];
            }
            // Warm-up, not measured: the first runs of each target pay for JIT compilation (tiered: hot code is
            // compiled again, with profile data, on a background thread whose CPU counts as the client's), connection
            // set-up and the broker's first queues; libraries with more code pay more. One full publish-only run and
            // one full end-to-end run per target get most of that out of the way; the median of the rounds does the rest.
            foreach (var target in targets)
            {
                await PublishOnlyAsync(target, count, size, cancellationToken);
                if (!settings.PublishOnly)
                {
                    await EndToEndAsync(target, count, size, cancellationToken);
                }
            }
            for (var round = 0; round < settings.Rounds; round++)
            {
                foreach (var i in Rotation(round))
                {
                    var (published, publishCpu, publishBytes) = await PublishOnlyAsync(targets[i], count, size, cancellationToken);
                    publish[i].Add(published);
                    publishAllocated[i].Add(publishBytes);
                    if (settings.PublishOnly)
                    {
                        Console.Error.WriteLine($"  {transport} {Size(size)} round {round + 1} {targets[i].Name}: publish {published:N0}/s ({publishCpu:0.0} µs CPU per event, {publishBytes:N0} bytes allocated per event)");
                        continue;
                    }
                    var (eventsPerSecond, client, broker, items, bytes) = await EndToEndAsync(targets[i], count, size, cancellationToken);
                    endToEnd[i].Add(eventsPerSecond);
                    endToEndAllocated[i].Add(bytes);
                    clientCpu[i].Add(client);
                    workItems[i].Add(items);
                    if (broker is { } b)
                    {
                        brokerCpu[i].Add(b);
                    }
                    Console.Error.WriteLine($"  {transport} {Size(size)} round {round + 1} {targets[i].Name}: publish {published:N0}/s ({publishCpu:0.0} µs CPU per event), end-to-end {eventsPerSecond:N0}/s, CPU per event client {client:0.0} µs broker {broker:0.0} µs");
                }
            }
            Row(table, "publish-only (events/s)", size, publish.Select(Median).ToArray(), ours, others, higherIsBetter: true);
            if (settings.PublishOnly)
            {
                Row(table, "publish-only, bytes allocated per event", size, publishAllocated.Select(Median).ToArray(), ours, others, higherIsBetter: false, integers: true);
                continue;
            }
            Row(table, "end-to-end (events/s)", size, endToEnd.Select(Median).ToArray(), ours, others, higherIsBetter: true);
            if (ours >= 0 && settings.Rounds > 1)
            {
                SpreadRow(table, "end-to-end, ratio within one round, lowest to highest", size, endToEnd, ours, others);
            }
            Row(table, "end-to-end, client CPU per event (µs)", size, clientCpu.Select(Median).ToArray(), ours, others, higherIsBetter: false);
            Row(table, "end-to-end, thread-pool work items per event", size, workItems.Select(Median).ToArray(), ours, others, higherIsBetter: false);
            if (brokerCpu.All(b => b.Count > 0))
            {
                Row(table, "end-to-end, broker CPU per event (µs)", size, brokerCpu.Select(Median).ToArray(), ours, others, higherIsBetter: false);
            }
            // Bytes allocated by this whole process (every thread, the broker client's included) per event: publish-only
            // measures the publish path, end-to-end minus publish-only the receive path.
            Row(table, "publish-only, bytes allocated per event", size, publishAllocated.Select(Median).ToArray(), ours, others, higherIsBetter: false, integers: true);
            Row(table, "receive path, bytes allocated per event (end-to-end minus publish-only)", size,
                endToEndAllocated.Select(Median).Zip(publishAllocated.Select(Median), (e, p) => e - p).ToArray(), ours, others, higherIsBetter: false, integers: true);

            // Latency at a fixed rate: a fraction of the slowest target's maximum, the same rate for every target.
            var rate = Math.Max(10, endToEnd.Select(Median).Min() * settings.LatencyFraction);
            var p50 = new List<double>[targets.Count];
            var p99 = new List<double>[targets.Count];
            var p95 = new List<double>[targets.Count];
            for (var i = 0; i < targets.Count; i++)
            {
                p50[i] = [];
                p95[i] = [];
                p99[i] = [];
            }
            for (var round = 0; round < settings.Rounds; round++)
            {
                foreach (var i in Rotation(round))
                {
                    var (a, b, c) = await LatencyAsync(targets[i], rate, size, cancellationToken);
                    p50[i].Add(a);
                    p95[i].Add(b);
                    p99[i].Add(c);
                    Console.Error.WriteLine($"  {transport} {Size(size)} round {round + 1} {targets[i].Name}: latency at {rate:N0}/s p50 {a:0.00} p95 {b:0.00} p99 {c:0.00} ms");
                }
            }
            Row(table, $"latency p50 at {rate:N0}/s (ms)", size, p50.Select(Median).ToArray(), ours, others, higherIsBetter: false);
            Row(table, $"latency p95 at {rate:N0}/s (ms)", size, p95.Select(Median).ToArray(), ours, others, higherIsBetter: false);
            Row(table, $"latency p99 at {rate:N0}/s (ms)", size, p99.Select(Median).ToArray(), ours, others, higherIsBetter: false);
        }
        return table.ToString();
    }

    private IEnumerable<int> Rotation(int round) => Enumerable.Range(0, targets.Count).Select(i => (i + round) % targets.Count);

    private static void Row(StringBuilder table, string scenario, int size, double[] values, int ours, List<int> others, bool higherIsBetter, bool integers = false)
    {
        table.Append(CultureInfo.InvariantCulture, $"| {scenario} | {Size(size)} |");
        foreach (var v in values)
        {
            table.Append(CultureInfo.InvariantCulture, $" {(higherIsBetter || integers ? v.ToString("#,0", CultureInfo.InvariantCulture) : v.ToString("0.00", CultureInfo.InvariantCulture))} |");
        }
        foreach (var i in others)
        {
            // A ratio to a figure that prints as 0.00 (e.g. a loop that hands nothing to the thread pool) means nothing.
            // So does a ratio to an allocation of next to nothing (measured over the whole process, it can even be negative).
            table.Append(Math.Abs(values[i]) < 0.005 || (integers && values[i] < 16) ? " n/a |" : string.Create(CultureInfo.InvariantCulture, $" {values[ours] / values[i]:0.00} |"));
        }
        table.AppendLine();
    }

    /// <summary>
    /// The ratios of this library to each other target measured in the same round (runs minutes apart), lowest and
    /// highest: how far one round of this machine can be trusted.
    /// </summary>
    private static void SpreadRow(StringBuilder table, string scenario, int size, List<double>[] values, int ours, List<int> others)
    {
        table.Append(CultureInfo.InvariantCulture, $"| {scenario} | {Size(size)} |");
        table.Append(string.Concat(Enumerable.Repeat(" |", values.Length)));
        foreach (var i in others)
        {
            var ratios = values[ours].Zip(values[i], (a, b) => a / b).ToList();
            table.Append(CultureInfo.InvariantCulture, $" {ratios.Min():0.00} to {ratios.Max():0.00} |");
        }
        table.AppendLine();
    }

    private static string Size(int size) => size >= 1024 ? $"{size / 1024} KB" : $"{size} B";

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length == 0 ? double.NaN : sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>
    /// Waits (up to 5 s) until the broker is idle: deleting the previous run's queue, compacting its log and the like
    /// would otherwise be charged to whichever target runs next.
    /// </summary>
    private async Task QuiesceAsync(CancellationToken cancellationToken)
    {
        if (!settings.WaitForIdleBroker)
        {
            return;
        }
        var step = TimeSpan.FromMilliseconds(100);
        for (var i = 0; i < 50; i++)
        {
            var (_, before) = _cpu.Read();
            await Task.Delay(step, cancellationToken);
            var (_, after) = _cpu.Read();
            if (before is null || after is null || after.Value - before.Value < step * 0.05)
            {
                return;
            }
        }
    }

    private async Task<(double Rate, double ClientCpu, double AllocatedPerEvent)> PublishOnlyAsync(IBenchTarget target, int count, int size, CancellationToken cancellationToken)
    {
        await QuiesceAsync(cancellationToken);
        await target.StartAsync(consume: false, new Recorder(), cancellationToken);
        try
        {
            var (client0, _) = _cpu.Read();
            var allocated0 = GC.GetTotalAllocatedBytes(precise: true);
            var watch = Stopwatch.StartNew();
            await target.PublishManyAsync(count, size, cancellationToken).WaitAsync(Timeout, cancellationToken);
            var elapsed = watch.Elapsed;
            var allocated1 = GC.GetTotalAllocatedBytes(precise: true);
            var (client1, _) = _cpu.Read();
            return (count / elapsed.TotalSeconds, (client1 - client0).TotalMicroseconds / count, (allocated1 - allocated0) / (double)count);
        }
        finally
        {
            await target.StopAsync();
        }
    }

    /// <returns>
    /// Events per second; CPU microseconds per event of this process and of the broker (when measurable); thread-pool
    /// work items this process ran per event (each is a hand-off between threads, and on few cores often a wake-up); bytes
    /// this process allocated per event.
    /// </returns>
    private async Task<(double Rate, double ClientCpu, double? BrokerCpu, double WorkItems, double AllocatedPerEvent)> EndToEndAsync(IBenchTarget target, int count, int size, CancellationToken cancellationToken)
    {
        await QuiesceAsync(cancellationToken);
        var recorder = new Recorder();
        await target.StartAsync(consume: true, recorder, cancellationToken);
        try
        {
            var (client0, broker0) = _cpu.Read();
            var items0 = ThreadPool.CompletedWorkItemCount;
            var allocated0 = GC.GetTotalAllocatedBytes(precise: true);
            var watch = Stopwatch.StartNew();
            await target.PublishManyAsync(count, size, cancellationToken).WaitAsync(Timeout, cancellationToken);
            await recorder.WaitForAsync(count, Timeout);
            var elapsed = watch.Elapsed;
            var allocated1 = GC.GetTotalAllocatedBytes(precise: true);
            var (client1, broker1) = _cpu.Read();
            var items = (ThreadPool.CompletedWorkItemCount - items0) / (double)count;
            return (count / elapsed.TotalSeconds, (client1 - client0).TotalMicroseconds / count,
                broker0 is { } b0 && broker1 is { } b1 ? (b1 - b0).TotalMicroseconds / count : null, items, (allocated1 - allocated0) / (double)count);
        }
        finally
        {
            await target.StopAsync();
        }
    }

    private async Task<(double, double, double)> LatencyAsync(IBenchTarget target, double rate, int size, CancellationToken cancellationToken)
    {
        await QuiesceAsync(cancellationToken);
        var recorder = new Recorder { RecordLatency = true };
        await target.StartAsync(consume: true, recorder, cancellationToken);
        try
        {
            var count = Math.Max(20, (int)(rate * settings.LatencyDuration.TotalSeconds));
            var pending = new List<Task>(count);
            var start = Stopwatch.GetTimestamp();
            for (var i = 0; i < count; i++)
            {
                var due = TimeSpan.FromSeconds(i / rate);
                var wait = due - Stopwatch.GetElapsedTime(start);
                if (settings.SpinPacing)
                {
                    // Each event at its own time, at the cost of a core spent waiting (no bursts).
                    while (Stopwatch.GetElapsedTime(start) < due)
                    {
                        Thread.SpinWait(20);
                    }
                }
                else if (wait > TimeSpan.FromMilliseconds(1))
                {
                    await Task.Delay(wait, cancellationToken);
                }
                pending.Add(target.PublishOneAsync(Recorder.Payload(size), cancellationToken));
            }
            await Task.WhenAll(pending).WaitAsync(Timeout, cancellationToken);
            await recorder.WaitForAsync(count, Timeout);
            return recorder.Percentiles();
        }
        finally
        {
            await target.StopAsync();
        }
    }
}
