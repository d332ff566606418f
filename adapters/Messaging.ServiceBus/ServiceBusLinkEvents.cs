using System.Collections.Concurrent;
using System.Diagnostics.Tracing;

namespace Messaging.ServiceBus;

/// <summary>
/// Tells a receiver when the broker closed one of its receive links with an error (a forced detach, an entity deleted or
/// moved, a lost connection). The Service Bus client re-attaches such a link by itself and reports it only as an event of
/// its event source ("Receive Link Closed", with the link's error), so without this the consumer would recover silently and
/// a flapping link would never be seen. Created when the first receiver starts, so a process that only publishes pays
/// nothing; receivers are told apart by the identifier each gives its client.
/// </summary>
internal sealed class ServiceBusLinkEvents : EventListener
{
    private const string SourceName = "Azure-Messaging-ServiceBus";
    private const int ReceiveLinkClosedEventId = 38; // the client's event id for "Receive Link Closed"

    private static readonly Lazy<ServiceBusLinkEvents> Shared = new(() => new ServiceBusLinkEvents());

    // Assigned after the base constructor, which may already report event sources (and events): hence nullable.
    private readonly ConcurrentDictionary<string, Action<string>>? _watchers = new(StringComparer.Ordinal);

    public static IDisposable Watch(string receiverIdentifier, Action<string> linkClosed)
    {
        var events = Shared.Value;
        events._watchers![receiverIdentifier] = linkClosed;
        return new Unwatch(events, receiverIdentifier);
    }

    protected override void OnEventSourceCreated(EventSource eventSource)
    {
        if (eventSource.Name == SourceName)
        {
            EnableEvents(eventSource, EventLevel.Informational);
        }
    }

    protected override void OnEventWritten(EventWrittenEventArgs eventData)
    {
        if (eventData.EventId != ReceiveLinkClosedEventId || eventData.Payload is not { Count: >= 3 } payload)
        {
            return;
        }
        // A link closed without an error is one the client closed itself (a receiver disposed): nothing to report.
        if (payload[0] is string identifier && payload[2] is string error && error.Length > 0 && _watchers?.TryGetValue(identifier, out var watcher) == true)
        {
            watcher(error);
        }
    }

    private sealed class Unwatch(ServiceBusLinkEvents events, string identifier) : IDisposable
    {
        public void Dispose() => events._watchers!.TryRemove(identifier, out _);
    }
}
