using System.Collections.Concurrent;
using System.Text;

namespace Messaging.ConformanceTests.Infrastructure;

/// <summary>
/// Records every case x transport outcome and writes <c>conformance-tests/LEDGER.md</c> when the run ends, so no
/// case can be silently skipped: each cell is passed, failed, unsupported (declared by the transport) or skipped.
/// </summary>
public sealed class Ledger : IAsyncDisposable
{
    private static readonly ConcurrentDictionary<(string Case, string Transport), string> Results = new();

    public static void Record(string caseName, string transport, string outcome) => Results[(caseName, transport)] = outcome;

    public ValueTask DisposeAsync()
    {
        if (Results.IsEmpty)
        {
            return ValueTask.CompletedTask;
        }
        var transports = Results.Keys.Select(k => k.Transport).Distinct().Order(StringComparer.Ordinal).ToList();
        var cases = Results.Keys.Select(k => k.Case).Distinct().Order(StringComparer.Ordinal).ToList();
        var text = new StringBuilder();
        text.AppendLine("# Conformance ledger");
        text.AppendLine();
        text.AppendLine("Written by the conformance suite at the end of each run (`conformance-tests/Messaging.ConformanceTests`).");
        text.AppendLine("Every case runs unchanged against every transport. `unsupported` means the transport declares the capability absent and the suite verified that it is refused with a clear error.");
        text.AppendLine();
        text.Append("| case |");
        foreach (var t in transports)
        {
            text.Append(' ').Append(t).Append(" |");
        }
        text.AppendLine();
        text.Append("|---|");
        text.AppendLine(string.Concat(transports.Select(_ => "---|")));
        foreach (var c in cases)
        {
            text.Append("| ").Append(c).Append(" |");
            foreach (var t in transports)
            {
                text.Append(' ').Append(Results.TryGetValue((c, t), out var outcome) ? outcome : "not run").Append(" |");
            }
            text.AppendLine();
        }
        text.AppendLine();
        foreach (var t in transports)
        {
            var outcomes = Results.Where(r => r.Key.Transport == t).GroupBy(r => r.Value).OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => $"{g.Count()} {g.Key}");
            text.AppendLine($"- {t}: {string.Join(", ", outcomes)}");
        }
        Cases.PoisonCorpus.AppendLedgerSection(text);
        var path = Environment.GetEnvironmentVariable("MESSAGING_LEDGER_PATH") ?? Path.Combine(FindRoot(), "conformance-tests", "LEDGER.md");
        File.WriteAllText(path, text.ToString());
        return ValueTask.CompletedTask;
    }

    private static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Messaging.sln")))
        {
            dir = dir.Parent;
        }
        return dir?.FullName ?? Directory.GetCurrentDirectory();
    }
}
