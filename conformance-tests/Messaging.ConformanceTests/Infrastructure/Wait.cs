using System.Diagnostics;

namespace Messaging.ConformanceTests.Infrastructure;

/// <summary>Waits on conditions with a deadline; never a fixed sleep.</summary>
public static class Wait
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(30);

    public static async Task UntilAsync(Func<bool> condition, string what, TimeSpan? timeout = null)
    {
        var limit = timeout ?? DefaultTimeout;
        var watch = Stopwatch.StartNew();
        while (!condition())
        {
            if (watch.Elapsed > limit)
            {
                throw new TimeoutException($"Timed out after {limit.TotalSeconds:0.#}s waiting until {what}.");
            }
            await Task.Delay(20, TestContext.Current.CancellationToken);
        }
    }

    public static async Task<T> UntilAsync<T>(Func<Task<T>> probe, Func<T, bool> condition, string what, TimeSpan? timeout = null)
    {
        var limit = timeout ?? DefaultTimeout;
        var watch = Stopwatch.StartNew();
        while (true)
        {
            var value = await probe();
            if (condition(value))
            {
                return value;
            }
            if (watch.Elapsed > limit)
            {
                throw new TimeoutException($"Timed out after {limit.TotalSeconds:0.#}s waiting until {what}.");
            }
            await Task.Delay(50, TestContext.Current.CancellationToken);
        }
    }

    /// <summary>
    /// Asserts that nothing more happens for a quiet period: used to prove "no further delivery". The period is a
    /// bound on observation, not a synchronisation sleep.
    /// </summary>
    public static async Task StaysAsync(Func<bool> condition, string what, TimeSpan period)
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < period)
        {
            Assert.True(condition(), $"Expected {what} to hold, but it stopped holding after {watch.Elapsed.TotalMilliseconds:0}ms.");
            await Task.Delay(20, TestContext.Current.CancellationToken);
        }
    }
}
