using System.Diagnostics;
using System.Globalization;

namespace Messaging.Benchmarks.Harness;

/// <summary>
/// CPU time spent by this process and, when it runs on this machine, by the broker's process. On a machine where the
/// client and the broker share two cores, every client CPU cycle is one the broker does not get, so CPU per event is
/// the figure that explains throughput; it is also far less sensitive to other load than events per second.
/// </summary>
internal sealed class CpuMeter(string? brokerProcessName)
{
    private readonly int? _brokerPid = brokerProcessName is null ? null : FindProcess(brokerProcessName);

    public (TimeSpan Client, TimeSpan? Broker) Read()
    {
        using var self = Process.GetCurrentProcess();
        return (self.TotalProcessorTime, _brokerPid is { } pid ? ReadLinuxCpu(pid) : null);
    }

    private static int? FindProcess(string name)
    {
        if (!Directory.Exists("/proc"))
        {
            return null;
        }
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), out var pid))
            {
                try
                {
                    if (File.ReadAllText(Path.Combine(dir, "comm")).Trim() == name)
                    {
                        return pid;
                    }
                }
                catch (IOException)
                {
                    // The process ended while we looked.
                }
                catch (UnauthorizedAccessException)
                {
                }
            }
        }
        return null;
    }

    /// <summary>utime + stime from /proc/{pid}/stat (fields 14 and 15, in clock ticks of 1/100 s on Linux).</summary>
    private static TimeSpan? ReadLinuxCpu(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            var ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
            return TimeSpan.FromMilliseconds(ticks * 10);
        }
        catch (IOException)
        {
            return null;
        }
    }
}
