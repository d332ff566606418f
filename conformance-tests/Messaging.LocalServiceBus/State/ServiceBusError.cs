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

    /// <summary>The session lock expired, was released, or is held by another receiver (the SDK's SessionLockLost).</summary>
    public static ServiceBusErrorException SessionLockLost(string sessionId) =>
        new("com.microsoft:session-lock-lost", 410, $"The session lock has expired on the MessageSession. Accept a new MessageSession. SessionId:{sessionId}.");

    /// <summary>A receiver asked for a session another receiver holds (the SDK's SessionCannotBeLocked).</summary>
    public static ServiceBusErrorException SessionCannotBeLocked(string sessionId) =>
        new("com.microsoft:session-cannot-be-locked", 410, $"The requested session '{sessionId}' cannot be accepted. It may be locked by another receiver.");

    /// <summary>No session became available within the receiver's timeout (the SDK's ServiceTimeout).</summary>
    public static ServiceBusErrorException Timeout(string path) =>
        new("com.microsoft:timeout", 408, $"The operation did not complete within the allocated time for '{path}': no unlocked session with messages was available.");

    /// <summary>An operation the entity's kind does not allow (a session receiver on an entity without sessions, and the reverse).</summary>
    public static ServiceBusErrorException NotAllowed(string detail) =>
        new("amqp:not-allowed", 400, detail);

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
