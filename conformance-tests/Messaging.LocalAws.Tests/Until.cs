using System.Diagnostics;

namespace Messaging.LocalAws.Tests;

/// <summary>Condition waits with a deadline, instead of fixed sleeps.</summary>
internal static class Until
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(10);

    public static Task TrueAsync(Func<bool> condition, string what) => TrueAsync(() => Task.FromResult(condition()), what);

    public static async Task TrueAsync(Func<Task<bool>> condition, string what)
    {
        var watch = Stopwatch.StartNew();
        while (!await condition())
        {
            if (watch.Elapsed > Limit)
            {
                throw new TimeoutException($"Timed out after {Limit.TotalSeconds:0}s waiting until {what}.");
            }

            await Task.Delay(20, TestContext.Current.CancellationToken);
        }
    }
}
