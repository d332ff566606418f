using System.Diagnostics;

namespace Messaging.Tests.Infrastructure;

/// <summary>Waits on conditions with a deadline; never a fixed sleep. The deadline is only reached when a test fails.</summary>
internal static class Wait
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    public static CancellationToken TestToken => TestContext.Current.CancellationToken;

    public static async Task UntilAsync(Func<bool> condition, string what, TimeSpan? timeout = null)
    {
        var limit = timeout ?? Timeout;
        var watch = Stopwatch.StartNew();
        while (!condition())
        {
            if (watch.Elapsed > limit)
            {
                throw new TimeoutException($"Timed out after {limit.TotalSeconds:0.#}s waiting until {what}.");
            }
            await Task.Delay(1, TestToken);
        }
    }

    /// <summary>Awaits <paramref name="task"/>, failing the test instead of hanging when it does not complete in time.</summary>
    public static async Task ForAsync(Task task, string what, TimeSpan? timeout = null)
    {
        try
        {
            await task.WaitAsync(timeout ?? Timeout, TestToken);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"Timed out after {(timeout ?? Timeout).TotalSeconds:0.#}s waiting for {what}.");
        }
    }

    /// <inheritdoc cref="ForAsync(Task, string, TimeSpan?)"/>
    public static async Task<T> ForAsync<T>(Task<T> task, string what, TimeSpan? timeout = null)
    {
        await ForAsync((Task)task, what, timeout);
        return await task;
    }
}
