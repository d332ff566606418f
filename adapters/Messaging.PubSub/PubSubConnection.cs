using Google.Apis.Auth.OAuth2;
using Grpc.Core;
using Grpc.Net.Client;
using Messaging.PubSub.Grpc;

namespace Messaging.PubSub;

/// <summary>
/// One gRPC channel to Pub/Sub (the emulator in plaintext, or the service with Application Default Credentials),
/// the two generated clients, and the retry rule every unary call follows.
/// </summary>
internal sealed class PubSubConnection : IDisposable
{
    /// <summary>The OAuth scope that covers every Pub/Sub call.</summary>
    public const string Scope = "https://www.googleapis.com/auth/pubsub";

    public const string DefaultEndpoint = "https://pubsub.googleapis.com";

    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan RetryBudget = TimeSpan.FromSeconds(60);

    private readonly GrpcChannel _channel;

    public PubSubConnection(PubSubTransportOptions options)
    {
        var handler = new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = true,
            KeepAlivePingDelay = TimeSpan.FromSeconds(30),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(20),
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            ConnectTimeout = TimeSpan.FromSeconds(15),
        };
        var channelOptions = new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            // A streaming-pull response can carry several messages of up to 10 MB each.
            MaxReceiveMessageSize = 128 * 1024 * 1024,
            MaxSendMessageSize = null,
        };
        var emulator = options.ResolveEmulatorHost();
        string address;
        if (emulator is not null)
        {
            address = "http://" + emulator;
            IsEmulator = true;
            channelOptions.Credentials = ChannelCredentials.Insecure;
            // The emulator's gRPC server allows a keep-alive ping only every 5 minutes (gRPC's default); more often, it closes the
            // connection (GOAWAY, ENHANCE_YOUR_CALM), taking every stream and call on it down. Nothing on loopback needs one.
            handler.KeepAlivePingDelay = Timeout.InfiniteTimeSpan;
        }
        else
        {
            address = string.IsNullOrWhiteSpace(options.Endpoint) ? DefaultEndpoint : options.Endpoint;
            if (address.StartsWith("http://", StringComparison.OrdinalIgnoreCase))
            {
                channelOptions.Credentials = ChannelCredentials.Insecure;
            }
            else
            {
                var credential = new Lazy<Task<GoogleCredential>>(
                    async () => (await GoogleCredential.GetApplicationDefaultAsync(CancellationToken.None).ConfigureAwait(false)).CreateScoped(Scope),
                    LazyThreadSafetyMode.ExecutionAndPublication);
                var callCredentials = CallCredentials.FromInterceptor(async (context, metadata) =>
                {
                    var token = await ((ITokenAccess)await credential.Value.ConfigureAwait(false))
                        .GetAccessTokenForRequestAsync(context.ServiceUrl, context.CancellationToken).ConfigureAwait(false);
                    metadata.Add("authorization", "Bearer " + token);
                });
                channelOptions.Credentials = ChannelCredentials.Create(new SslCredentials(), callCredentials);
            }
        }
        Address = address;
        _channel = GrpcChannel.ForAddress(address, channelOptions);
        Publisher = new Publisher.PublisherClient(_channel);
        Subscriber = new Subscriber.SubscriberClient(_channel);
    }

    public string Address { get; }

    public bool IsEmulator { get; }

    public Publisher.PublisherClient Publisher { get; }

    public Subscriber.SubscriberClient Subscriber { get; }

    /// <summary>Options for one unary call: a deadline, and the caller's cancellation.</summary>
    public static CallOptions Call(CancellationToken cancellationToken, TimeSpan? timeout = null) =>
        new(deadline: DateTime.UtcNow + (timeout ?? CallTimeout), cancellationToken: cancellationToken);

    /// <summary>Status codes after which the same call may succeed (broker restarting, stream reassigned, overload).</summary>
    public static bool IsTransient(RpcException ex) => ex.StatusCode is
        StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.ResourceExhausted
        or StatusCode.Aborted or StatusCode.Internal or StatusCode.Unknown;

    /// <summary>
    /// Runs a unary call, retrying transient failures with exponential backoff for up to a minute, so a broker
    /// restart is ridden out rather than surfaced. Non-transient failures are thrown at once.
    /// </summary>
    public static async Task<T> WithRetryAsync<T>(Func<CallOptions, Task<T>> call, CancellationToken cancellationToken)
    {
        var started = DateTime.UtcNow;
        var delay = TimeSpan.FromMilliseconds(100);
        while (true)
        {
            try
            {
                return await call(Call(cancellationToken)).ConfigureAwait(false);
            }
            catch (RpcException ex) when (IsTransient(ex) && !cancellationToken.IsCancellationRequested && DateTime.UtcNow - started + delay < RetryBudget)
            {
                await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(5).Ticks));
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.Cancelled && cancellationToken.IsCancellationRequested)
            {
                throw new OperationCanceledException(ex.Message, ex, cancellationToken);
            }
        }
    }

    public void Dispose() => _channel.Dispose();
}
