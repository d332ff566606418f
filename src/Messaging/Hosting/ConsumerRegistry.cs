using Messaging.Transport;

namespace Messaging.Hosting;

/// <summary>
/// The consumers the hosted service runs, and where the hosted service is in its life, for the consumers health check.
/// One per service provider.
/// </summary>
internal sealed class ConsumerRegistry
{
    private readonly Lock _lock = new();
    private readonly List<ReceivePipeline> _consumers = [];

    /// <summary>Where the hosted service is.</summary>
    public HostState State { get; private set; } = HostState.NotStarted;

    public void Add(ReceivePipeline pipeline)
    {
        lock (_lock)
        {
            _consumers.Add(pipeline);
        }
    }

    public void MarkStarted()
    {
        lock (_lock)
        {
            State = HostState.Running;
        }
    }

    public void MarkStopping()
    {
        lock (_lock)
        {
            State = HostState.Stopping;
        }
    }

    /// <summary>The health of every consumer, and the hosted service's state, read together.</summary>
    public (HostState State, IReadOnlyList<ConsumerHealth> Consumers) Snapshot()
    {
        List<ReceivePipeline> consumers;
        HostState state;
        lock (_lock)
        {
            consumers = [.. _consumers];
            state = State;
        }
        return (state, consumers.Select(c => c.GetHealth()).ToList());
    }

    /// <summary>Where the messaging hosted service is in its life.</summary>
    internal enum HostState
    {
        /// <summary>Its start has not completed.</summary>
        NotStarted,

        /// <summary>Started, and no stop began.</summary>
        Running,

        /// <summary>The host is stopping it.</summary>
        Stopping,
    }
}
