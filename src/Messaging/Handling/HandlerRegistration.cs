using System.Text.Json;
using CloudNative.CloudEvents;
using Microsoft.Extensions.DependencyInjection;

namespace Messaging.Handling;

/// <summary>One handler bound to one CloudEvent type (or every type) within a subscription.</summary>
internal sealed class HandlerRegistration
{
    private readonly Func<IServiceProvider, EventContext, JsonSerializerOptions, CancellationToken, Task> _invoke;

    private HandlerRegistration(string? eventType, Type handlerType, Func<IServiceProvider, EventContext, JsonSerializerOptions, CancellationToken, Task> invoke)
    {
        EventType = eventType;
        HandlerType = handlerType;
        _invoke = invoke;
    }

    /// <summary>The CloudEvent <c>type</c> handled, or <c>null</c> for every type.</summary>
    public string? EventType { get; private set; }

    /// <summary>For typed handlers registered without an explicit CloudEvent type: the data type whose mapping supplies it.</summary>
    public Type? MappedDataType { get; private init; }

    /// <summary>Fills in the CloudEvent type of a handler registered through its data type's mapping.</summary>
    public void ResolveEventType(Func<Type, string?> mappedType)
    {
        if (MappedDataType is not null && EventType is null)
        {
            EventType = mappedType(MappedDataType) ?? MappedDataType.FullName;
        }
    }

    public Type HandlerType { get; }

    public Task InvokeAsync(IServiceProvider scope, EventContext context, JsonSerializerOptions json, CancellationToken cancellationToken) =>
        _invoke(scope, context, json, cancellationToken);

    public static HandlerRegistration Typed<TEvent, THandler>(string eventType)
        where THandler : class, IEventHandler<TEvent> =>
        new(eventType, typeof(THandler), async (scope, context, json, ct) =>
        {
            var data = Deserialize<TEvent>(context.Event, json);
            var handler = scope.GetRequiredService<THandler>();
            await handler.HandleAsync(data, context, ct).ConfigureAwait(false);
        });

    public static HandlerRegistration TypedLazy<TEvent, THandler>()
        where THandler : class, IEventHandler<TEvent>
    {
        var registration = Typed<TEvent, THandler>("placeholder");
        return new HandlerRegistration(null, typeof(THandler), registration._invoke) { MappedDataType = typeof(TEvent) };
    }

    public static HandlerRegistration Raw<THandler>(string? eventType)
        where THandler : class, ICloudEventHandler =>
        new(eventType, typeof(THandler), (scope, context, _, ct) => scope.GetRequiredService<THandler>().HandleAsync(context, ct));

    private static TEvent Deserialize<TEvent>(CloudEvent cloudEvent, JsonSerializerOptions json)
    {
        if (cloudEvent.Data is not byte[] bytes || bytes.Length == 0)
        {
            throw new EventDataException($"CloudEvent '{cloudEvent.Id}' of type '{cloudEvent.Type}' carries no data, but the handler expects {typeof(TEvent).Name}.");
        }
        try
        {
            return JsonSerializer.Deserialize<TEvent>(bytes, json)
                ?? throw new EventDataException($"CloudEvent '{cloudEvent.Id}' has null data, but the handler expects {typeof(TEvent).Name}.");
        }
        catch (JsonException ex)
        {
            throw new EventDataException($"The data of CloudEvent '{cloudEvent.Id}' (type '{cloudEvent.Type}', content type '{cloudEvent.DataContentType}') is not valid JSON for {typeof(TEvent).Name}: {ex.Message}", ex);
        }
    }
}

/// <summary>The event's data cannot be read as the handler's type. The event is dead-lettered as invalid.</summary>
public sealed class EventDataException : Exception
{
    /// <summary>Creates the exception with a message naming the event, its type and the expected .NET type.</summary>
    public EventDataException(string message) : base(message) { }

    /// <summary>Creates the exception with the deserialiser's error as <paramref name="innerException"/>.</summary>
    public EventDataException(string message, Exception innerException) : base(message, innerException) { }
}
