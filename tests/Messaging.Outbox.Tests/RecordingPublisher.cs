using System.Collections.Concurrent;
using CloudNative.CloudEvents;
using Messaging.Publishing;

namespace Messaging.Outbox.Tests;

/// <summary>Stands in for the transport's publish: records what the relay sent, in order, across every host of a test.</summary>
public sealed class RecordingPublisher : IEventPublisher
{
    public ConcurrentQueue<(string Topic, string EventId, string Relay)> Sent { get; } = new();

    public ConcurrentDictionary<string, CloudEvent> Events { get; } = new();

    /// <summary>Runs before each publish; may delay or throw.</summary>
    public Func<string, CloudEvent, Task> BeforePublish { get; set; } = (_, _) => Task.CompletedTask;

    public IEventPublisher For(string relay) => new Tagged(this, relay);

    public Task<CloudEvent> PublishAsync<T>(T data, Action<CloudEvent>? configure = null, CancellationToken cancellationToken = default)
        where T : notnull => throw new NotSupportedException();

    public Task PublishAsync(string topic, CloudEvent cloudEvent, CancellationToken cancellationToken = default) =>
        For("?").PublishAsync(topic, cloudEvent, cancellationToken);

    public Task PublishBatchAsync(string topic, IEnumerable<CloudEvent> cloudEvents, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("the relay publishes one event at a time");

    public CloudEvent CreateEvent<T>(T data, Action<CloudEvent>? configure = null)
        where T : notnull => throw new NotSupportedException();

    private sealed class Tagged(RecordingPublisher inner, string relay) : IEventPublisher
    {
        public Task<CloudEvent> PublishAsync<T>(T data, Action<CloudEvent>? configure = null, CancellationToken cancellationToken = default)
            where T : notnull => throw new NotSupportedException();

        public async Task PublishAsync(string topic, CloudEvent cloudEvent, CancellationToken cancellationToken = default)
        {
            await inner.BeforePublish(topic, cloudEvent);
            inner.Events[cloudEvent.Id!] = cloudEvent;
            inner.Sent.Enqueue((topic, cloudEvent.Id!, relay));
        }

        public Task PublishBatchAsync(string topic, IEnumerable<CloudEvent> cloudEvents, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public CloudEvent CreateEvent<T>(T data, Action<CloudEvent>? configure = null)
            where T : notnull => throw new NotSupportedException();
    }
}
