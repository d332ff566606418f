using System.Diagnostics;
using System.Text.Json;
using CloudNative.CloudEvents;
using Messaging.Diagnostics;
using Messaging.Envelope;
using Messaging.Hosting;
using Messaging.Transport;
using Microsoft.Extensions.Options;

namespace Messaging.Publishing;

internal sealed class EventPublisher : IEventPublisher
{
    private readonly IMessageTransport _transport;
    private readonly MessagingModel _model;
    private readonly Uri _source;
    private readonly TimeProvider _time;
    private readonly TimeSpan _timeout;
    private readonly PublishDeadlines _deadlines;

    public EventPublisher(IMessageTransport transport, MessagingModel model, IOptions<MessagingOptions> options, TimeProvider time)
    {
        _transport = transport;
        _model = model;
        _time = time;
        _timeout = options.Value.PublishTimeout;
        _deadlines = new PublishDeadlines(_timeout, time);
        _source = new Uri(options.Value.Source ?? MessagingOptions.DefaultSource, UriKind.RelativeOrAbsolute);
    }

    public CloudEvent CreateEvent<T>(T data, Action<CloudEvent>? configure = null)
        where T : notnull
    {
        ArgumentNullException.ThrowIfNull(data);
        var mapping = _model.GetEventMapping(typeof(T));
        var now = _time.GetUtcNow();
        var cloudEvent = new CloudEvent(CloudEventsSpecVersion.V1_0, _model.ExtensionAttributes)
        {
            Id = EventIds.NewId(now),
            Source = _source,
            Type = mapping.EventType,
            Time = now,
            DataContentType = "application/json",
            Data = JsonSerializer.SerializeToUtf8Bytes(data, _model.JsonOptions),
        };
        configure?.Invoke(cloudEvent);
        return cloudEvent;
    }

    public async Task<CloudEvent> PublishAsync<T>(T data, Action<CloudEvent>? configure = null, CancellationToken cancellationToken = default)
        where T : notnull
    {
        var cloudEvent = CreateEvent(data, configure);
        await PublishCoreAsync(_model.GetEventMapping(typeof(T)).Topic, [cloudEvent], cancellationToken).ConfigureAwait(false);
        return cloudEvent;
    }

    public Task PublishAsync(string topic, CloudEvent cloudEvent, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(cloudEvent);
        return PublishCoreAsync(topic, [cloudEvent], cancellationToken);
    }

    public Task PublishBatchAsync(string topic, IEnumerable<CloudEvent> cloudEvents, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(cloudEvents);
        var batch = cloudEvents as IReadOnlyList<CloudEvent> ?? cloudEvents.ToList();
        return batch.Count == 0 ? Task.CompletedTask : PublishCoreAsync(topic, batch, cancellationToken);
    }

    private async Task PublishCoreAsync(string topic, IReadOnlyList<CloudEvent> events, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(topic);
        using var activity = MessagingDiagnostics.StartPublish(_transport.Name, topic, events.Count);
        foreach (var cloudEvent in events)
        {
            CloudEventAttributeMap.EnsureValid(cloudEvent);
            CloudEventData.Normalize(cloudEvent, _model.JsonOptions);
            MessagingDiagnostics.Inject(cloudEvent, activity ?? Activity.Current);
        }
        if (events.Count == 1)
        {
            activity?.SetTag("messaging.message.id", events[0].Id);
        }
        // Shared with the publishes that started in the same slice of time (see PublishDeadlines), never disposed here.
        var timer = _deadlines.Current();
        // A caller's token that can never fire needs no linking: the timer's token is then the deadline (one allocation less
        // on every publish without a token).
        using var linked = cancellationToken.CanBeCanceled ? CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timer.Token) : null;
        var deadline = linked?.Token ?? timer.Token;
        try
        {
            // The transport gets a token that fires at the deadline; WaitAsync also bounds a broker client that does not
            // honour its token while the broker blocks (the publish then goes on in the background and may still store).
            await _transport.PublishAsync(topic, events, deadline).WaitAsync(deadline).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            activity?.SetStatus(ActivityStatusCode.Error, "cancelled");
            throw;
        }
        catch (Exception ex) when (timer.IsCancellationRequested && ex is not EventPublishException)
        {
            activity?.SetStatus(ActivityStatusCode.Error, "timed out");
            activity?.SetTag("error.type", typeof(TimeoutException).FullName);
            throw new EventPublishException(
                $"Publishing {events.Count} event(s) to topic '{topic}' on {_transport.Name} did not complete within Messaging:PublishTimeout ({_timeout}); " +
                "the broker may be blocking or throttling publishers, or be unreachable. Some of the events may have been stored.", ex, isTransient: true)
            {
                Topic = topic,
                Transport = _transport.Name,
            };
        }
        catch (Exception ex)
        {
            activity?.SetStatus(ActivityStatusCode.Error, ex.Message);
            activity?.SetTag("error.type", ex.GetType().FullName);
            if (ex is EventPublishException)
            {
                throw;
            }
            throw new EventPublishException(
                $"Publishing {events.Count} event(s) to topic '{topic}' on {_transport.Name} failed: {ex.Message}", ex, _transport.IsTransient(ex))
            {
                Topic = topic,
                Transport = _transport.Name,
            };
        }
        MessagingDiagnostics.SentMessages.Add(events.Count,
            new KeyValuePair<string, object?>("messaging.system", _transport.Name),
            new KeyValuePair<string, object?>("messaging.destination.name", topic));
    }
}
