using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Topology;
using Messaging.Transport;

namespace Messaging.Tests.Infrastructure;

/// <summary>A transport that only starts <see cref="FakeReceiver"/>s: the receive side is all the pipeline uses.</summary>
internal sealed class FakeTransport(ITransportReceiver receiver) : IMessageTransport
{
    public string Name => "fake";

    public TransportCapabilities Capabilities { get; } = new() { MaxEventSizeBytes = 256 * 1024, OrderingKeys = true };

    public IDeadLetterStore DeadLetters { get; } = new NoDeadLetterStore();

    public ReceivePipeline? Pipeline { get; private set; }

    public Task ProvisionAsync(MessagingTopology topology, CancellationToken cancellationToken) => Task.CompletedTask;

    public Task PublishAsync(string topic, IReadOnlyList<CloudEvent> events, CancellationToken cancellationToken) =>
        throw new NotSupportedException("The fake transport only receives.");

    public Task<ITransportReceiver> StartReceiverAsync(ReceivePipeline pipeline, CancellationToken cancellationToken)
    {
        Pipeline = pipeline;
        return Task.FromResult(receiver);
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private sealed class NoDeadLetterStore : IDeadLetterStore
    {
        public Task<IReadOnlyList<DeadLetteredEvent>> PeekAsync(string subscription, int maxCount, CancellationToken cancellationToken) =>
            Task.FromResult<IReadOnlyList<DeadLetteredEvent>>([]);

        public Task<int> ReplayAsync(string subscription, Func<DeadLetteredEvent, bool> select, CancellationToken cancellationToken) =>
            Task.FromResult(0);

        public Task<int> PurgeAsync(string subscription, Func<DeadLetteredEvent, bool> select, CancellationToken cancellationToken) =>
            Task.FromResult(0);
    }
}
