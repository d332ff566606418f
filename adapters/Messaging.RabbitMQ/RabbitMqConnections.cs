using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;

namespace Messaging.RabbitMQ;

/// <summary>
/// Two automatically recovering connections, one for publishing and one for consuming, so that flow control
/// on a busy publisher never stalls acknowledgements.
/// </summary>
internal sealed partial class RabbitMqConnections : IAsyncDisposable
{
    private readonly ConnectionFactory _factory;
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private IConnection? _publishing;
    private IConnection? _consuming;
    private volatile bool _closing;

    public RabbitMqConnections(RabbitMqTransportOptions options, ILogger logger)
    {
        _logger = logger;
        _factory = new ConnectionFactory
        {
            AutomaticRecoveryEnabled = true,
            TopologyRecoveryEnabled = true,
            NetworkRecoveryInterval = options.NetworkRecoveryInterval,
            ClientProvidedName = options.ClientName ?? AppDomain.CurrentDomain.FriendlyName,
            MaxInboundMessageBodySize = (uint)Math.Min(int.MaxValue, (long)options.MaxEventSizeBytes * 2),
        };
        // Recovery re-declares the exchanges this connection declared. One that was meanwhile re-created with another
        // type (or other properties) is refused with precondition-failed: without a handler the whole recovery would
        // fail and start over, forever, and publishing would stop. The existing exchange still works, as at start-up.
        _factory.TopologyRecoveryExceptionHandler = new TopologyRecoveryExceptionHandler
        {
            ExchangeRecoveryExceptionCondition = (_, ex) => ex is global::RabbitMQ.Client.Exceptions.OperationInterruptedException { ShutdownReason.ReplyCode: Constants.PreconditionFailed },
            ExchangeRecoveryExceptionHandlerAsync = (exchange, ex, _) =>
            {
                LogExchangeNotRecovered(exchange.Name, ((global::RabbitMQ.Client.Exceptions.OperationInterruptedException)ex).ShutdownReason?.ReplyText);
                return Task.CompletedTask;
            },
        };
        if (!string.IsNullOrWhiteSpace(options.Uri))
        {
            if (options.UseTls && options.Uri.StartsWith("amqp://", StringComparison.OrdinalIgnoreCase))
            {
                throw new ArgumentException(
                    $"Messaging:RabbitMQ:UseTls is true but Messaging:RabbitMQ:Uri '{RabbitMqOptionsValidator.Redact(options.Uri)}' is amqp://, which is plaintext; use amqps://.", nameof(options));
            }
            _factory.Uri = new Uri(options.Uri); // amqps:// turns TLS on, with the URI's host as the expected server name
        }
        else
        {
            _factory.HostName = options.Host;
            _factory.Port = options.Port;
            _factory.UserName = options.UserName;
            _factory.Password = options.Password;
            _factory.VirtualHost = options.VirtualHost;
        }
        // TLS settings apply however the endpoint was given: with a Uri too (an amqp:// Uri with UseTls is refused at
        // start-up, so this never silently connects in plaintext).
        if (options.UseTls || _factory.Ssl.Enabled)
        {
            var serverName = options.TlsServerName ?? _factory.HostName;
            var trustedCa = string.IsNullOrWhiteSpace(options.TlsCaCertificatePath)
                ? null
                : X509Certificate2.CreateFromPem(File.ReadAllText(options.TlsCaCertificatePath));
            _factory.Ssl = new SslOption(serverName, enabled: true)
            {
                CertificateValidationCallback = (_, certificate, chain, errors) => ValidateServerCertificate(certificate, errors, serverName, trustedCa),
            };
        }
        Endpoint = $"{_factory.HostName}:{_factory.Port}{_factory.VirtualHost}";
    }

    public string Endpoint { get; }

    /// <summary>Why the broker's TLS certificate was refused on the last attempt, for the connection error.</summary>
    private volatile string? _certificateProblem;

    /// <summary>
    /// The platform's checks, except that with <see cref="RabbitMqTransportOptions.TlsCaCertificatePath"/> the chain must end at
    /// that CA instead of a machine root. A wrong server name is never accepted.
    /// </summary>
    private bool ValidateServerCertificate(X509Certificate? certificate, SslPolicyErrors errors, string serverName, X509Certificate2? trustedCa)
    {
        if (errors == SslPolicyErrors.None)
        {
            return true;
        }
        if (certificate is null || (errors & (SslPolicyErrors.RemoteCertificateNameMismatch | SslPolicyErrors.RemoteCertificateNotAvailable)) != 0)
        {
            _certificateProblem = $"the broker's certificate does not name '{serverName}' ({errors}); set Messaging:RabbitMQ:TlsServerName to a name it holds";
            return false;
        }
        if (trustedCa is null)
        {
            _certificateProblem = $"the broker's certificate is not trusted by this machine ({errors}); set Messaging:RabbitMQ:TlsCaCertificatePath to its CA";
            return false;
        }
        using var custom = new X509Chain();
        custom.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        custom.ChainPolicy.CustomTrustStore.Add(trustedCa);
        custom.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        using var presented = new X509Certificate2(certificate);
        if (custom.Build(presented))
        {
            return true;
        }
        _certificateProblem = $"the broker's certificate does not chain to the CA in Messaging:RabbitMQ:TlsCaCertificatePath ({string.Join(", ", custom.ChainStatus.Select(c => c.Status))})";
        return false;
    }

    /// <summary>Why the broker blocks this client's publishers (a memory or disk alarm), while it does.</summary>
    public string? BlockedReason { get; private set; }

    /// <summary>
    /// The state of the connections, without a call to the broker: unhealthy while one is closed (the client recovers it),
    /// degraded while the broker blocks publishing.
    /// </summary>
    public Messaging.Transport.TransportHealth Health()
    {
        var opened = new List<string>();
        var closed = new List<string>();
        foreach (var (role, connection) in new[] { ("publishing", _publishing), ("consuming", _consuming) })
        {
            if (connection is null)
            {
                continue;
            }
            if (connection.IsOpen)
            {
                opened.Add(role);
            }
            else
            {
                closed.Add($"the {role} connection is closed ({connection.CloseReason?.ReplyText ?? "no reason given"})");
            }
        }
        if (closed.Count > 0)
        {
            return Messaging.Transport.TransportHealth.Unhealthy($"RabbitMQ at {Endpoint}: {string.Join("; ", closed)}; recovering automatically.");
        }
        if (BlockedReason is { } blocked)
        {
            return Messaging.Transport.TransportHealth.Degraded($"RabbitMQ at {Endpoint} blocks publishing: {blocked}.");
        }
        return opened.Count == 0
            ? Messaging.Transport.TransportHealth.Healthy($"No connection to RabbitMQ at {Endpoint} was needed yet.")
            : Messaging.Transport.TransportHealth.Healthy($"Connected to RabbitMQ at {Endpoint} ({string.Join(", ", opened)}).");
    }

    public Task<IConnection> PublishingAsync(CancellationToken cancellationToken) => GetAsync(publishing: true, cancellationToken);

    public Task<IConnection> ConsumingAsync(CancellationToken cancellationToken) => GetAsync(publishing: false, cancellationToken);

    private async Task<IConnection> GetAsync(bool publishing, CancellationToken cancellationToken)
    {
        var existing = publishing ? _publishing : _consuming;
        if (existing is not null)
        {
            return existing;
        }
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            existing = publishing ? _publishing : _consuming;
            if (existing is not null)
            {
                return existing;
            }
            var name = $"{_factory.ClientProvidedName} ({(publishing ? "publish" : "consume")})";
            IConnection connection;
            try
            {
                connection = await _factory.CreateConnectionAsync(name, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is global::RabbitMQ.Client.Exceptions.BrokerUnreachableException)
            {
                var reason = _certificateProblem is { } tls ? $"TLS failed: {tls}" : ex.InnerException?.Message ?? ex.Message;
                throw new InvalidOperationException(
                    $"Cannot connect to RabbitMQ at {Endpoint}: {reason}. Check Messaging:RabbitMQ:Uri (or Host/Port/UserName/Password/VirtualHost/UseTls).", ex);
            }
            connection.ConnectionShutdownAsync += (_, args) =>
            {
                // Closing it ourselves (dispose) is not a loss; anything else is, including a recovery attempt the
                // client itself gives up on.
                if (!_closing)
                {
                    LogConnectionLost(name, args.ReplyText);
                }
                return Task.CompletedTask;
            };
            connection.ConnectionBlockedAsync += (_, args) =>
            {
                BlockedReason = args.Reason;
                LogBlocked(name, args.Reason);
                return Task.CompletedTask;
            };
            connection.ConnectionUnblockedAsync += (_, _) =>
            {
                BlockedReason = null;
                LogUnblocked(name);
                return Task.CompletedTask;
            };
            connection.RecoverySucceededAsync += (_, _) =>
            {
                LogConnectionRecovered(name);
                return Task.CompletedTask;
            };
            if (publishing)
            {
                _publishing = connection;
            }
            else
            {
                _consuming = connection;
            }
            return connection;
        }
        finally
        {
            _gate.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        _closing = true;
        foreach (var connection in new[] { _publishing, _consuming })
        {
            if (connection is null)
            {
                continue;
            }
            try
            {
                await connection.CloseAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is global::RabbitMQ.Client.Exceptions.AlreadyClosedException or IOException or OperationCanceledException)
            {
                // Already gone; nothing to release on the broker.
            }
            await connection.DisposeAsync().ConfigureAwait(false);
        }
        _publishing = null;
        _consuming = null;
        _gate.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "RabbitMQ connection {Connection} lost: {Reason}; recovering automatically")]
    private partial void LogConnectionLost(string connection, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "RabbitMQ exchange '{Exchange}' was not re-declared on recovery: it now exists with another type or other properties ({Reason}); it is used as it is. Messaging:RabbitMQ:ExchangeType only applies to exchanges it creates.")]
    private partial void LogExchangeNotRecovered(string exchange, string? reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "RabbitMQ connection {Connection} recovered")]
    private partial void LogConnectionRecovered(string connection);

    [LoggerMessage(Level = LogLevel.Warning, Message = "RabbitMQ blocks publishing on connection {Connection}: {Reason}; publishes wait, and fail after Messaging:RabbitMQ:PublishTimeout")]
    private partial void LogBlocked(string connection, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "RabbitMQ no longer blocks publishing on connection {Connection}")]
    private partial void LogUnblocked(string connection);
}
