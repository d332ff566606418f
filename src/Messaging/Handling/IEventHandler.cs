namespace Messaging.Handling;

/// <summary>Handles events whose data deserialises to <typeparamref name="TEvent"/>. Resolved from DI in a new scope per event.</summary>
public interface IEventHandler<in TEvent>
{
    /// <summary>
    /// Handles one event. Completing normally settles it as handled; throwing <see cref="UnprocessableEventException"/> or
    /// calling <see cref="EventContext.Reject"/> dead-letters it at once; any other exception makes it retried by the
    /// subscription's policy until its attempts are used up, then dead-lettered.
    /// </summary>
    /// <param name="data">The event's data, deserialised from JSON.</param>
    /// <param name="context">The CloudEvent itself, the broker-counted attempt number and the subscription.</param>
    /// <param name="cancellationToken">Cancelled when the host stops or the message's lease at the broker is lost.</param>
    Task HandleAsync(TEvent data, EventContext context, CancellationToken cancellationToken);
}

/// <summary>Handles raw CloudEvents of any type the handler is registered for. Resolved from DI in a new scope per event.</summary>
public interface ICloudEventHandler
{
    /// <summary>
    /// Handles one CloudEvent (<see cref="EventContext.Event"/>). Outcomes as for <see cref="IEventHandler{TEvent}"/>:
    /// completing settles it, <see cref="UnprocessableEventException"/> or <see cref="EventContext.Reject"/> dead-letters it
    /// at once, any other exception makes it retried by the subscription's policy.
    /// </summary>
    /// <param name="context">The CloudEvent, the broker-counted attempt number and the subscription.</param>
    /// <param name="cancellationToken">Cancelled when the host stops or the message's lease at the broker is lost.</param>
    Task HandleAsync(EventContext context, CancellationToken cancellationToken);
}
