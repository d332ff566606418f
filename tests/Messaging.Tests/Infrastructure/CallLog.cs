using System.Collections.Concurrent;

namespace Messaging.Tests.Infrastructure;

/// <summary>An ordered, thread-safe record of the calls a receiver and its messages got ("stop-receiving", "complete:m1", ...).</summary>
internal sealed class CallLog
{
    private readonly ConcurrentQueue<string> _entries = new();

    public void Add(string entry) => _entries.Enqueue(entry);

    public IReadOnlyList<string> Entries => [.. _entries];

    public bool Contains(string entry) => _entries.Contains(entry);

    /// <summary>Position of <paramref name="entry"/>, failing the test when it was never logged.</summary>
    public int PositionOf(string entry)
    {
        var entries = Entries;
        for (var i = 0; i < entries.Count; i++)
        {
            if (entries[i] == entry)
            {
                return i;
            }
        }
        Assert.Fail($"'{entry}' was never called; calls: {this}");
        return -1;
    }

    public override string ToString() => string.Join(", ", _entries);
}
