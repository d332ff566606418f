using System.Text.Json;
using CloudNative.CloudEvents;
using Messaging.Diagnostics;
using Messaging.Handling;
using Messaging.Topology;

namespace Messaging.Hosting;

/// <summary>What the application declared in code: topics, event types, subscriptions and their handlers.</summary>
public sealed class MessagingModel
{
    private readonly Dictionary<Type, EventMapping> _events = [];
    private readonly List<CloudEventAttribute> _extensions = [.. MessagingDiagnostics.ExtensionAttributes];

    internal List<string> Topics { get; } = [];

    internal Dictionary<string, SubscriptionModel> Subscriptions { get; } = new(StringComparer.Ordinal);

    internal Dictionary<string, Func<IServiceProvider, TransportContext, Transport.IMessageTransport>> Transports { get; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>Serializer settings for event data.</summary>
    public JsonSerializerOptions JsonOptions { get; } = new(JsonSerializerDefaults.Web);

    /// <summary>Extension attributes with known types, so they are read back typed from binary-mode messages.</summary>
    public IReadOnlyList<CloudEventAttribute> ExtensionAttributes => _extensions;

    internal void AddExtension(CloudEventAttribute attribute)
    {
        if (!_extensions.Any(a => a.Name == attribute.Name))
        {
            _extensions.Add(attribute);
        }
    }

    internal void MapEvent(Type type, EventMapping mapping) => _events[type] = mapping;

    internal string? FindEventType(Type type) => _events.TryGetValue(type, out var mapping) ? mapping.EventType : null;

    internal EventMapping GetEventMapping(Type type) =>
        _events.TryGetValue(type, out var mapping)
            ? mapping
            : throw new InvalidOperationException(
                $"No topic is mapped for {type.FullName}. Call MapEvent<{type.Name}>(topic, type) when adding messaging, or publish a CloudEvent to an explicit topic.");

    /// <summary>
    /// The topology a host provisions at start-up: the topics declared in code (<c>AddTopic</c>, <c>MapEvent</c>) and every
    /// declared subscription with its policy as <paramref name="options"/> resolve it (configuration over code defaults).
    /// Tools that provision without running consumers (the <c>messaging topology provision</c> command) pass it to
    /// <see cref="Transport.IMessageTransport.ProvisionAsync"/>.
    /// </summary>
    public MessagingTopology BuildTopology(MessagingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var subscriptions = Subscriptions.Values.Select(s => s.ToDefinition(options.Subscriptions[s.Name])).ToList();
        var topics = Topics.Concat(subscriptions.Select(s => s.Topic)).Distinct(StringComparer.Ordinal).ToList();
        return new MessagingTopology(topics, subscriptions);
    }
}

internal sealed record EventMapping(string Topic, string EventType);

internal sealed class SubscriptionModel(string name)
{
    public string Name { get; } = name;

    public List<HandlerRegistration> Handlers { get; } = [];

    public List<Action<SubscriptionOptions>> Defaults { get; } = [];

    public SubscriptionDefinition ToDefinition(SubscriptionOptions options) => new()
    {
        Name = Name,
        Topic = options.Topic!,
        Retry = options.ToRetryPolicy(),
        Concurrency = options.Concurrency,
        Prefetch = options.Prefetch,
        Ordered = options.Ordered,
    };
}
