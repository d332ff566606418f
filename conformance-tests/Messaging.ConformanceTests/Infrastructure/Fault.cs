namespace Messaging.ConformanceTests.Infrastructure;

/// <summary>The handle of a fault a fixture caused: disposing it ends the fault (once).</summary>
public sealed class Fault(Func<Task> end) : IAsyncDisposable
{
    private int _ended;

    /// <summary>A fault that is over as soon as it happened (a closed connection): nothing to end.</summary>
    public static IAsyncDisposable Over { get; } = new Fault(() => Task.CompletedTask);

    public static IAsyncDisposable Until(IDisposable lifted) => new Fault(() =>
    {
        lifted.Dispose();
        return Task.CompletedTask;
    });

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _ended, 1) == 0)
        {
            await end();
        }
    }
}
