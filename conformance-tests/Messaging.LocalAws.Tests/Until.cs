using System.Diagnostics;

namespace Messaging.LocalAws.Tests;

/// <summary>Condition waits with a deadline, instead of fixed sleeps.</summary>
internal static class Until
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(10);

    public static Task TrueAsync(Func<bool> condition, string what, TimeSpan? limit = null) => TrueAsync(() => Task.FromResult(condition()), what, limit);

    public static async Task TrueAsync(Func<Task<bool>> condition, string what, TimeSpan? limit = null)
    {
        var deadline = limit ?? Limit;
        var watch = Stopwatch.StartNew();
        while (!await condition())
        {
            if (watch.Elapsed > deadline)
            {
                throw new TimeoutException($"Timed out after {deadline.TotalSeconds:0}s waiting until {what}.");
            }

            await Task.Delay(20, TestContext.Current.CancellationToken);
        }
    }
}
