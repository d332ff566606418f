namespace Messaging.Handling;

/// <summary>Handles events whose data deserialises to <typeparamref name="TEvent"/>. Resolved from DI in a new scope per event.</summary>
public interface IEventHandler<in TEvent>
{
    Task HandleAsync(TEvent data, EventContext context, CancellationToken cancellationToken);
}

/// <summary>Handles raw CloudEvents of any type the handler is registered for. Resolved from DI in a new scope per event.</summary>
public interface ICloudEventHandler
{
    Task HandleAsync(EventContext context, CancellationToken cancellationToken);
}
