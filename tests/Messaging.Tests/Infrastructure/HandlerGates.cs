using System.Collections.Concurrent;

namespace Messaging.Tests.Infrastructure;

/// <summary>
/// One gate per message id: a handler waits at its message's gate until the test opens it. Also records which handlers
/// started, in order, so that tests can wait until a handler is running.
/// </summary>
internal sealed class HandlerGates
{
    private readonly ConcurrentDictionary<string, TaskCompletionSource> _gates = new();
    private readonly ConcurrentQueue<string> _started = new();

    public IReadOnlyList<string> Started => [.. _started];

    public bool HasStarted(string id) => _started.Contains(id);

    /// <summary>Records that the handler of <paramref name="id"/> started and waits until its gate opens.</summary>
    public Task EnterAsync(string id, CancellationToken cancellationToken = default)
    {
        _started.Enqueue(id);
        return Gate(id).Task.WaitAsync(cancellationToken);
    }

    public void Open(string id) => Gate(id).TrySetResult();

    public Task WaitUntilStartedAsync(string id) => Wait.UntilAsync(() => HasStarted(id), $"the handler of {id} started");

    private TaskCompletionSource Gate(string id) =>
        _gates.GetOrAdd(id, static _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
}
