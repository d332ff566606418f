namespace Messaging.Transport;

/// <summary>How a transport's connection to its broker is, as <see cref="TransportHealth"/> reports it.</summary>
public enum TransportHealthStatus
{
    /// <summary>The broker cannot be reached, or refuses the transport's calls.</summary>
    Unhealthy = 0,

    /// <summary>The broker answers, but with a restriction (it blocks publishers, say).</summary>
    Degraded = 1,

    /// <summary>The broker answers.</summary>
    Healthy = 2,
}

/// <summary>The result of <see cref="IMessageTransport.CheckHealthAsync"/>: a status and a sentence saying why.</summary>
/// <param name="Status">How the connection is.</param>
/// <param name="Description">What was checked and what was found, for operators.</param>
/// <param name="Exception">The failure that made the check unhealthy, if any.</param>
public sealed record TransportHealth(TransportHealthStatus Status, string Description, Exception? Exception = null)
{
    /// <summary>A <see cref="TransportHealthStatus.Healthy"/> result; <paramref name="description"/> says what was checked.</summary>
    public static TransportHealth Healthy(string description) => new(TransportHealthStatus.Healthy, description);

    /// <summary>A <see cref="TransportHealthStatus.Degraded"/> result; <paramref name="description"/> names the restriction (a blocked publisher, say).</summary>
    public static TransportHealth Degraded(string description) => new(TransportHealthStatus.Degraded, description);

    /// <summary>An <see cref="TransportHealthStatus.Unhealthy"/> result, with the failure that made it so when there is one.</summary>
    public static TransportHealth Unhealthy(string description, Exception? exception = null) => new(TransportHealthStatus.Unhealthy, description, exception);
}
