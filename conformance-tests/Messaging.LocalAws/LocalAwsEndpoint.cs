using System.Net;
using Messaging.LocalAws.Protocol;
using Messaging.LocalAws.Sns;
using Messaging.LocalAws.Sqs;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Messaging.LocalAws;

/// <summary>
/// A local SNS/SQS endpoint on 127.0.0.1, wire-compatible with the AWS SDKs: SQS in the AWS JSON 1.0
/// protocol, SNS in the AWS query protocol, both on <see cref="ServiceUrl"/>. It keeps all state in memory;
/// <see cref="StopListeningAsync"/> simulates an outage (connections refused, state kept) and
/// <see cref="StartListeningAsync"/> brings it back on the same port.
/// </summary>
public sealed class LocalAwsEndpoint : IAsyncDisposable
{
    private static readonly TimeSpan ShutdownTimeout = TimeSpan.FromSeconds(2);

    private readonly LocalAwsContext _context;
    private readonly AwsRequestRouter _router;
    private readonly SqsBroker _sqs;
    private readonly RequestRefusals _refusals = new();
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly ILoggerFactory _loggerFactory;
    private WebApplication? _application;
    private CancellationTokenSource? _listening;
    private int _port;
    private bool _disposed;

    private LocalAwsEndpoint(LocalAwsEndpointOptions options)
    {
        _port = options.Port;
        _loggerFactory = options.LoggerFactory ?? NullLoggerFactory.Instance;
        _context = new LocalAwsContext(options.Region, options.AccountId, options.TimeProvider, _loggerFactory);
        _sqs = new SqsBroker(_context);
        var sns = new SnsBroker(_context, _sqs);
        _router = new AwsRequestRouter(_context, new SqsJsonApi(_sqs), new SnsQueryApi(sns), _refusals);
    }

    /// <summary>The one URL for SQS and SNS: <c>http://127.0.0.1:{port}/</c>.</summary>
    public Uri ServiceUrl => _context.ServiceUrl;

    public string Region => _context.Region;

    public string AccountId => _context.AccountId;

    /// <summary>SQS long polls waiting now, those whose client went away included (for tests to wait on).</summary>
    internal int WaitingReceivePolls => _sqs.WaitingPolls;

    /// <summary>SQS long polls whose client went away while they waited, since the start (for tests to wait on).</summary>
    internal int AbandonedReceivePolls => _sqs.AbandonedPolls;

    /// <summary>Starts an endpoint and waits until it accepts connections.</summary>
    public static async Task<LocalAwsEndpoint> StartAsync(LocalAwsEndpointOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new LocalAwsEndpointOptions();
        Validate(options);
        var endpoint = new LocalAwsEndpoint(options);
        try
        {
            await endpoint.StartListeningAsync(cancellationToken).ConfigureAwait(false);
            return endpoint;
        }
        catch
        {
            await endpoint.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Simulates an outage: the listener closes, so connections are refused, and open requests (long polls
    /// included) are dropped. Queues, topics, subscriptions and messages are kept. No-op when not listening.
    /// </summary>
    public async Task StopListeningAsync(CancellationToken cancellationToken = default)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_application is null)
            {
                return;
            }

            await _listening!.CancelAsync().ConfigureAwait(false);
            await _application.StopAsync(cancellationToken).ConfigureAwait(false);
            await _application.DisposeAsync().ConfigureAwait(false);
            _listening.Dispose();
            _application = null;
            _listening = null;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Listens again, on the same port as before. No-op when already listening.</summary>
    public async Task StartListeningAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_application is not null)
            {
                return;
            }

            var listening = new CancellationTokenSource();
            var application = Build(listening.Token);
            try
            {
                await application.StartAsync(cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                await application.DisposeAsync().ConfigureAwait(false);
                listening.Dispose();
                throw;
            }

            var address = application.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            _port = new Uri(address).Port;
            _context.ServiceUrl = new Uri($"http://127.0.0.1:{_port}/");
            _application = application;
            _listening = listening;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// Injected fault: until the result is disposed, every request (or those to <paramref name="service"/>, <c>"sns"</c>
    /// or <c>"sqs"</c>, and of those only the ones naming <paramref name="action"/>, such as <c>"Publish"</c> or
    /// <c>"ReceiveMessage"</c>) is answered as AWS answers when it cannot take it: HTTP 503 <c>ServiceUnavailable</c>, in
    /// each API's error format (SQS: <c>__type</c> and the <c>x-amzn-query-error</c> header; SNS: the XML
    /// <c>ErrorResponse</c>). A refused request stores and changes nothing. Requests already under way, a waiting long
    /// poll included, finish normally.
    /// </summary>
    public IDisposable RefuseRequests(string? service = null, string? action = null)
    {
        string? normalized = service?.ToLowerInvariant();
        if (normalized is not (null or "sns" or "sqs"))
        {
            throw new ArgumentException($"Service '{service}' is neither \"sns\" nor \"sqs\".", nameof(service));
        }

        if (action is not null)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(action);
        }

        return _refusals.Add(normalized, action);
    }

    /// <summary>
    /// Injected fault: every in-flight message of the queue named <paramref name="queueName"/> (case-sensitive, as SQS
    /// queue names are) becomes visible now, exactly as if its visibility timeout had ended; delayed messages stay
    /// delayed. A waiting long poll takes them at once. The receipt handle of the lost receive stays the most recent one
    /// until the message is received again: until then it deletes the message (ChangeMessageVisibility with it fails with
    /// <c>MessageNotInflight</c>, the message not being in flight). Once the message has been received again, as on SQS,
    /// DeleteMessage with the old handle succeeds without deleting, and ChangeMessageVisibility with it fails with HTTP
    /// 400 <c>InvalidParameterValue</c> "Message does not exist or is not available for visibility timeout change".
    /// </summary>
    /// <returns>The number of in-flight messages made visible.</returns>
    /// <exception cref="InvalidOperationException">The queue does not exist.</exception>
    public int ExpireVisibility(string queueName)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(queueName);
        return _sqs.ExpireVisibility(queueName);
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        await StopListeningAsync().ConfigureAwait(false);
        _disposed = true;
        _gate.Dispose();
    }

    private WebApplication Build(CancellationToken outage)
    {
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore().ConfigureKestrel(kestrel =>
        {
            kestrel.Listen(IPAddress.Loopback, _port);
            kestrel.AddServerHeader = false;
            // SendMessageBatch may carry up to 10 x 1 MiB in its JSON encoding.
            kestrel.Limits.MaxRequestBodySize = 32 * 1024 * 1024;
        });
        builder.Services.AddRoutingCore();
        builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = ShutdownTimeout);
        builder.Services.AddSingleton<IHostLifetime, EmbeddedHostLifetime>();
        // Kestrel and hosting log through the caller's factory, or nowhere.
        builder.Services.AddLogging();
        builder.Services.Replace(ServiceDescriptor.Singleton(_loggerFactory));
        var application = builder.Build();
        application.MapPost("/{**path}", (HttpContext http) => _router.HandleAsync(http, outage));
        return application;
    }

    private static void Validate(LocalAwsEndpointOptions options)
    {
        if (options.Port is < 0 or > 65535)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.Port, "Port must be 0 (pick a free port) or 1-65535.");
        }

        if (string.IsNullOrEmpty(options.Region) || !options.Region.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c == '-'))
        {
            throw new ArgumentException($"Region '{options.Region}' is not a region name such as 'us-east-1'.", nameof(options));
        }

        if (options.AccountId is not { Length: 12 } || !options.AccountId.All(char.IsAsciiDigit))
        {
            throw new ArgumentException($"AccountId '{options.AccountId}' must be 12 digits.", nameof(options));
        }
    }
}
