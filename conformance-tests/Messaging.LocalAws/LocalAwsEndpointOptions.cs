using Microsoft.Extensions.Logging;

namespace Messaging.LocalAws;

/// <summary>Options of <see cref="LocalAwsEndpoint"/>.</summary>
public sealed class LocalAwsEndpointOptions
{
    /// <summary>The TCP port on 127.0.0.1; 0 (the default) picks a free port once, kept across restarts.</summary>
    public int Port { get; set; }

    /// <summary>The region requests must be signed for and ARNs name.</summary>
    public string Region { get; set; } = "us-east-1";

    /// <summary>The 12-digit account id in queue URLs and ARNs.</summary>
    public string AccountId { get; set; } = "000000000000";

    /// <summary>Receives the endpoint's and Kestrel's logs; none when null.</summary>
    public ILoggerFactory? LoggerFactory { get; set; }

    /// <summary>The clock of visibility timeouts, delays, retention and the 60-second rules; tests move it by hand.</summary>
    internal TimeProvider TimeProvider { get; set; } = TimeProvider.System;
}
