using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Text.RegularExpressions;
using Messaging.Diagnostics;

namespace Messaging.Tests.Diagnostics;

/// <summary>
/// The Grafana dashboard in <c>dashboards/messaging.json</c> queries only series the library's meter produces, under the
/// names the OpenTelemetry Prometheus exporter gives them, and it covers every instrument of the meter.
/// </summary>
public sealed partial class GrafanaDashboardTests
{
    [Fact]
    public void Every_series_the_dashboard_queries_is_one_the_meter_exports()
    {
        var exported = ExportedSeries();
        var queried = QueriedSeries();

        Assert.NotEmpty(queried);
        var unknown = queried.Where(name => !exported.Contains(name)).ToList();
        Assert.True(unknown.Count == 0, $"The dashboard queries series no instrument exports: {string.Join(", ", unknown)}. Exported: {string.Join(", ", exported.Order())}");
    }

    [Fact]
    public void Every_instrument_of_the_meter_has_a_panel()
    {
        var queried = QueriedSeries();
        var missing = Instruments()
            .Where(instrument => !PrometheusNames(instrument).Any(queried.Contains))
            .Select(instrument => instrument.Name)
            .ToList();

        Assert.True(missing.Count == 0, $"No panel shows these instruments: {string.Join(", ", missing)}");
    }

    [Fact]
    public void Panels_do_not_overlap_and_every_query_has_a_legend()
    {
        using var dashboard = JsonDocument.Parse(File.ReadAllText(DashboardPath()));
        var taken = new HashSet<(int X, int Y)>();
        foreach (var panel in dashboard.RootElement.GetProperty("panels").EnumerateArray())
        {
            var grid = panel.GetProperty("gridPos");
            int x0 = grid.GetProperty("x").GetInt32(), y0 = grid.GetProperty("y").GetInt32();
            int w = grid.GetProperty("w").GetInt32(), h = grid.GetProperty("h").GetInt32();
            Assert.InRange(x0 + w, 1, 24);
            for (var x = x0; x < x0 + w; x++)
            {
                for (var y = y0; y < y0 + h; y++)
                {
                    Assert.True(taken.Add((x, y)), $"Panel '{panel.GetProperty("title").GetString()}' overlaps another at ({x}, {y}).");
                }
            }
            if (panel.TryGetProperty("targets", out var targets))
            {
                foreach (var target in targets.EnumerateArray())
                {
                    Assert.False(string.IsNullOrWhiteSpace(target.GetProperty("legendFormat").GetString()));
                }
            }
        }
    }

    /// <summary>Series names in the dashboard's PromQL expressions.</summary>
    private static HashSet<string> QueriedSeries()
    {
        using var dashboard = JsonDocument.Parse(File.ReadAllText(DashboardPath()));
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var panel in dashboard.RootElement.GetProperty("panels").EnumerateArray())
        {
            if (!panel.TryGetProperty("targets", out var targets))
            {
                continue;
            }
            foreach (var target in targets.EnumerateArray())
            {
                foreach (Match match in SeriesName().Matches(target.GetProperty("expr").GetString()!))
                {
                    names.Add(match.Value);
                }
            }
        }
        return names;
    }

    /// <summary>Every series name the Prometheus exporter writes for the meter's instruments.</summary>
    private static HashSet<string> ExportedSeries() => Instruments().SelectMany(PrometheusNames).ToHashSet(StringComparer.Ordinal);

    /// <summary>
    /// The exporter's naming: dots become underscores; the unit <c>s</c> appends <c>_seconds</c> and annotations such as
    /// <c>{message}</c> append nothing; counters end in <c>_total</c>; histograms export <c>_bucket</c>, <c>_sum</c> and
    /// <c>_count</c>.
    /// </summary>
    private static IEnumerable<string> PrometheusNames(Instrument instrument)
    {
        var name = instrument.Name.Replace('.', '_');
        if (instrument.Unit == "s")
        {
            name += "_seconds";
        }
        var type = instrument.GetType().GetGenericTypeDefinition();
        if (type == typeof(Counter<>) || type == typeof(ObservableCounter<>))
        {
            return [name + "_total"];
        }
        if (type == typeof(Histogram<>))
        {
            return [name + "_bucket", name + "_sum", name + "_count"];
        }
        return [name];
    }

    private static List<Instrument> Instruments()
    {
        RuntimeHelpers.RunClassConstructor(typeof(MessagingDiagnostics).TypeHandle);
        var instruments = new List<Instrument>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, _) =>
            {
                if (instrument.Meter.Name == MessagingDiagnostics.SourceName)
                {
                    lock (instruments)
                    {
                        instruments.Add(instrument);
                    }
                }
            },
        };
        listener.Start();
        Assert.NotEmpty(instruments);
        return instruments;
    }

    private static string DashboardPath()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "dashboards", "messaging.json");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        throw new FileNotFoundException("dashboards/messaging.json was not found above the test's directory.");
    }

    [GeneratedRegex(@"\bmessaging_[a-z_]+(?=\{)")]
    private static partial Regex SeriesName();
}
