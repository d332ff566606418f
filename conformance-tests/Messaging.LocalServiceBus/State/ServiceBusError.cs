namespace Messaging.LocalServiceBus.State;

/// <summary>A failure the way Service Bus reports it: an AMQP error condition and, on $management, an HTTP-like status code.</summary>
internal sealed class ServiceBusErrorException(string condition, int statusCode, string message) : Exception(message)
{
    public string Condition { get; } = condition;
    public int StatusCode { get; } = statusCode;

    public static ServiceBusErrorException EntityNotFound(string path) =>
        new("amqp:not-found", 404, $"The messaging entity '{path}' could not be found.");

    public static ServiceBusErrorException LockLost() =>
        new("com.microsoft:message-lock-lost", 410, "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.");

    public static ServiceBusErrorException MessageNotFound(string detail) =>
        new("com.microsoft:message-not-found", 404, detail);

    public static ServiceBusErrorException AlreadyExists(string path) =>
        new("com.microsoft:entity-already-exists", 409, $"The messaging entity '{path}' already exists.");

    public static ServiceBusErrorException NotSupported(string detail) =>
        new("amqp:not-implemented", 501, detail);

    public static ServiceBusErrorException Unauthorized(string path) =>
        new("amqp:unauthorized-access", 401, $"Unauthorized access to '{path}': no put-token on $cbs has granted a claim for it on this connection.");

    public static ServiceBusErrorException BadArgument(string detail) =>
        new("com.microsoft:argument-error", 400, detail);

    /// <summary>Throttling, as Service Bus words it; the SDK reports it as ServiceBusy and waits before retrying.</summary>
    public static ServiceBusErrorException ServerBusy(string path) =>
        new("com.microsoft:server-busy", 503,
            $"The request was terminated because the entity is being throttled. Error code : 50009. Please wait 2 seconds and try again. {Tracking(path)}");

    /// <summary>The broker ends a link on its own (as Service Bus does on idle links, upgrades and load balancing).</summary>
    public static ServiceBusErrorException DetachForced(string linkName, string path) =>
        new("amqp:link:detach-forced", 410,
            $"The link '{linkName}' is force detached by the broker. Detach origin: fault injected by LocalServiceBusEndpoint.DetachReceivers. {Tracking(path)}");

    static string Tracking(string path) =>
        $"TrackingId:{Guid.NewGuid():N}, SystemTracker:{path}, Timestamp:{DateTime.UtcNow:O}";
}
