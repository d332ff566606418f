using System.Collections.Concurrent;
using System.Diagnostics;
using CloudNative.CloudEvents;
using Messaging.Handling;

namespace Messaging.ConformanceTests.Infrastructure;

/// <summary>One handled (or attempted) delivery as a handler saw it.</summary>
public sealed record Seen(CloudEvent Event, int Attempt, string Subscription, TimeSpan At, string? TraceParentOfActivity, string Host);

/// <summary>Identifies one host (one "process") of a test.</summary>
public sealed record HostIdentity(string Name);

/// <summary>Shared by every host of a test: records what handlers saw and lets the test script their behaviour.</summary>
public sealed class Probe
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private int _running;
    private int _maxRunning;

    public ConcurrentQueue<Seen> Attempts { get; } = new();

    public ConcurrentQueue<Seen> Handled { get; } = new();

    /// <summary>Scripted behaviour; the default succeeds.</summary>
    public Func<EventContext, CancellationToken, Task> Behaviour { get; set; } = (_, _) => Task.CompletedTask;

    public int MaxConcurrent => Volatile.Read(ref _maxRunning);

    public TimeSpan Now => _clock.Elapsed;

    public IEnumerable<Seen> AttemptsOf(string eventId) => Attempts.Where(s => s.Event.Id == eventId);

    internal async Task RunAsync(EventContext context, string host, CancellationToken cancellationToken)
    {
        var running = Interlocked.Increment(ref _running);
        int seenMax;
        while (running > (seenMax = Volatile.Read(ref _maxRunning)) && Interlocked.CompareExchange(ref _maxRunning, running, seenMax) != seenMax)
        {
        }
        var seen = new Seen(context.Event, context.Attempt, context.Subscription, _clock.Elapsed, Activity.Current?.ParentId, host);
        Attempts.Enqueue(seen);
        try
        {
            await Behaviour(context, cancellationToken);
            if (context.RejectionReason is null)
            {
                Handled.Enqueue(seen);
            }
        }
        finally
        {
            Interlocked.Decrement(ref _running);
        }
    }
}

/// <summary>The raw handler every conformance subscription uses; delegates to the test's <see cref="Probe"/>.</summary>
public sealed class ProbeHandler(Probe probe, HostIdentity host) : ICloudEventHandler
{
    public Task HandleAsync(EventContext context, CancellationToken cancellationToken) => probe.RunAsync(context, host.Name, cancellationToken);
}
