using System.Net;
using System.Net.Http.Json;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.Hosting;
using Messaging.PubSub;
using Messaging.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace Messaging.ConformanceTests.Transports;

/// <summary>
/// Google Pub/Sub: the emulator at <c>PUBSUB_EMULATOR_HOST</c> (default 127.0.0.1:8085) in project
/// <c>MESSAGING_PUBSUB_PROJECT</c> (default conformance-project). Raw messages are published over the emulator's REST API.
/// </summary>
public sealed class PubSubFixture : ITransportFixture, IAsyncLifetime
{
    private readonly string _host = Environment.GetEnvironmentVariable("PUBSUB_EMULATOR_HOST") ?? "127.0.0.1:8085";
    private readonly string _project = Environment.GetEnvironmentVariable("MESSAGING_PUBSUB_PROJECT") ?? "conformance-project";
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(30) };

    public string TransportName => PubSubTransport.TransportName;

    /// <summary>The emulator's <c>host:port</c>.</summary>
    public string Host => _host;

    /// <summary>The project the fixture's topics and subscriptions live in.</summary>
    public string Project => _project;

    public string? UnavailableReason { get; private set; }

    /// <summary>The emulator keeps everything in memory: restarting it loses topics and messages, so the restart case cannot apply.</summary>
    public bool CanRestartBroker => false;

    /// <summary>
    /// The emulator, when the stream holding an ordering key closes, goes on with the key's undelivered messages on another
    /// stream at once, ahead of the messages still leased to the closed one, even when those are given back in one call right
    /// after (traced: README, "Known limitations"). The window is the fixture's ack deadline, after which the leases are gone.
    /// </summary>
    public TimeSpan? KeyReorderWindowAfterCrash => TimeSpan.FromSeconds(10);

    private TcpProxy? _relay;

    public async ValueTask InitializeAsync()
    {
        try
        {
            using var response = await _http.GetAsync(new Uri($"http://{_host}/v1/projects/{_project}/topics"));
            response.EnsureSuccessStatusCode();
            // Hosts under test reach the emulator through a loopback relay, so the fault cases can cut or stall their
            // connections without restarting the emulator (which would lose every other case's state).
            var target = await Dns.GetHostAddressesAsync(_host[.._host.LastIndexOf(':')]);
            _relay = new TcpProxy(new IPEndPoint(target.First(a => a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork), int.Parse(_host[(_host.LastIndexOf(':') + 1)..], System.Globalization.CultureInfo.InvariantCulture)));
        }
        catch (Exception ex)
        {
            UnavailableReason = $"The Pub/Sub emulator is not reachable at {_host}: {ex.Message}";
        }
    }

    /// <summary>The emulator itself (not the relay the fault cases cut), with the suite's ack deadline.</summary>
    public IReadOnlyDictionary<string, string?>? ProcessSettings => new Dictionary<string, string?>
    {
        ["Messaging:Transport"] = PubSubTransport.TransportName,
        ["Messaging:PubSub:ProjectId"] = _project,
        ["Messaging:PubSub:EmulatorHost"] = _host,
        ["Messaging:PubSub:AckDeadline"] = "00:00:10",
    };

    public void Configure(IServiceCollection services, MessagingBuilder messaging)
    {
        messaging.AddPubSub().UseTransport(PubSubTransport.TransportName);
        services.Configure<PubSubTransportOptions>(o =>
        {
            o.ProjectId = _project;
            o.EmulatorHost = _relay is null ? _host : $"127.0.0.1:{_relay.Port}";
            // The shortest lease Pub/Sub allows: a delivery lost with a crashed consumer (one the emulator handed to the
            // dying stream after the courtesy nack) comes back within the suite's waits, as it would after a real crash.
            o.AckDeadline = TimeSpan.FromSeconds(10);
        });
    }

    /// <summary>Pub/Sub's dead-letter policy allows no fewer than 5 delivery attempts; a crash gives the message back at once.</summary>
    public IDictionary<string, string?> CrashLimitSettings { get; } = new Dictionary<string, string?>();

    public void UseLongLeases(IServiceCollection services) =>
        services.PostConfigure<PubSubTransportOptions>(o => o.AckDeadline = ITransportFixture.LongLease);

    public string BinaryAttributeName(string attribute) => "ce-" + attribute;

    public async Task PublishRawAsync(string topic, IReadOnlyDictionary<string, string> headers, byte[] body, string? contentType, CancellationToken cancellationToken)
    {
        var attributes = new Dictionary<string, string>(headers);
        if (contentType is not null)
        {
            attributes["content-type"] = contentType;
        }
        var request = new { messages = new[] { new { data = Convert.ToBase64String(body), attributes } } };
        using var response = await _http.PostAsJsonAsync(new Uri($"http://{_host}/v1/projects/{_project}/topics/{topic}:publish"), request, cancellationToken);
        response.EnsureSuccessStatusCode();
    }

    public async Task<string?> PublishRawAsync(string topic, RawMessage message, CancellationToken cancellationToken)
    {
        if (CannotCarry(message) is { } reason)
        {
            throw new NotSupportedException(reason);
        }
        var attributes = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in message.Headers)
        {
            attributes[key] = RawValues.AsText(value, out _)!;
        }
        if (message.ContentType is not null)
        {
            attributes["content-type"] = message.ContentType;
        }
        var request = new { messages = new[] { new { data = Convert.ToBase64String(message.Body), attributes } } };
        using var response = await _http.PostAsJsonAsync(new Uri($"http://{_host}/v1/projects/{_project}/topics/{topic}:publish"), request, cancellationToken);
        if (!response.IsSuccessStatusCode)
        {
            throw new HttpRequestException($"Pub/Sub refused the raw message ({(int)response.StatusCode}): {await response.Content.ReadAsStringAsync(cancellationToken)}");
        }
        var answer = await response.Content.ReadFromJsonAsync<PublishAnswer>(cancellationToken);
        return answer?.MessageIds is [var id] ? id : null;
    }

    private sealed record PublishAnswer(string[]? MessageIds);

    /// <summary>Pub/Sub attributes are UTF-8 strings; at most 100 per message, keys up to 256 bytes, values up to 1024 bytes (Pub/Sub quotas).</summary>
    public string? CannotCarry(RawMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (RawValues.NotAllText(message, "Pub/Sub attributes are strings") is { } reason)
        {
            return reason;
        }
        var count = message.Headers.Count + (message.ContentType is null ? 0 : 1);
        if (count > 100)
        {
            return $"Pub/Sub allows at most 100 attributes per message ({count} needed)";
        }
        foreach (var (key, value) in message.Headers)
        {
            if (System.Text.Encoding.UTF8.GetByteCount(key) > 256)
            {
                return $"Pub/Sub attribute keys are at most 256 bytes ('{key[..20]}...')";
            }
            if (System.Text.Encoding.UTF8.GetByteCount(RawValues.AsText(value, out _)!) > 1024)
            {
                return $"Pub/Sub attribute values are at most 1024 bytes (attribute '{key}')";
            }
        }
        return message.ContentType is { } contentType && System.Text.Encoding.UTF8.GetByteCount(contentType) > 1024
            ? "Pub/Sub attribute values are at most 1024 bytes (content-type)"
            : null;
    }

    /// <summary>Attributes are strings only: the fixture sends bytes as their base64 text.</summary>
    public string BinaryAttributeText(byte[] value) => Convert.ToBase64String(value);

    public string? PriorAttemptsHeader => null;

    public Task RestartBrokerAsync(CancellationToken cancellationToken) =>
        throw new NotSupportedException("The Pub/Sub emulator keeps its state in memory; a restart would lose every topic and message.");

    public async Task DeleteSubscriptionAsync(string topic, string subscription)
    {
        foreach (var path in new[]
        {
            $"subscriptions/{subscription}", $"subscriptions/{PubSubNames.DeadLetter(subscription)}", $"subscriptions/{PubSubNames.Replay(subscription)}",
            $"topics/{PubSubNames.DeadLetter(subscription)}", $"topics/{PubSubNames.Replay(subscription)}", $"topics/{topic}",
        })
        {
            try
            {
                using var _ = await _http.DeleteAsync(new Uri($"http://{_host}/v1/projects/{_project}/{path}"));
            }
            catch (HttpRequestException)
            {
                // Cleanup is best effort.
            }
        }
    }

    /// <summary>
    /// Deletes a resource (<c>topics/x</c>, <c>subscriptions/y</c>) over the emulator's admin REST API, as an operator or
    /// another team would, behind the transport's back.
    /// </summary>
    public async Task AdminDeleteAsync(string path, CancellationToken cancellationToken)
    {
        using var response = await _http.DeleteAsync(new Uri($"http://{_host}/v1/projects/{_project}/{path}"), cancellationToken);
        response.EnsureSuccessStatusCode();
    }

    /// <summary>Creates a resource over the admin REST API (PUT, as <c>gcloud</c> does), with the given JSON body.</summary>
    public async Task AdminCreateAsync(string path, object body, CancellationToken cancellationToken)
    {
        using var response = await _http.PutAsJsonAsync(new Uri($"http://{_host}/v1/projects/{_project}/{path}"), body, cancellationToken);
        if (!response.IsSuccessStatusCode)
        {
            throw new HttpRequestException($"Pub/Sub refused to create {path} ({(int)response.StatusCode}): {await response.Content.ReadAsStringAsync(cancellationToken)}");
        }
    }

    public bool CanInjectFaults => _relay is not null;

    public bool BrokenConsumersStayBroken => false;

    /// <summary>The emulator stops answering: the relay holds every byte until the fault ends, then delivers them.</summary>
    public Task<IAsyncDisposable> BlockPublishesAsync(CancellationToken cancellationToken) =>
        Task.FromResult(Fault.Until(_relay!.Hold()));

    /// <summary>Every connection of the hosts under test is reset (RST), ending their streaming pulls as a server-side reset does.</summary>
    public Task<IAsyncDisposable> BreakConsumersAsync(string topic, string subscription, CancellationToken cancellationToken)
    {
        var cut = _relay!.ResetAll();
        Assert.True(cut > 0, "no connection to the Pub/Sub emulator was open to reset");
        return Task.FromResult(Fault.Over);
    }

    public Task ExpireLeasesAsync(string topic, string subscription, CancellationToken cancellationToken) =>
        throw new NotSupportedException("Pub/Sub does not report which lease was lost; the transport's capabilities say so.");

    public async ValueTask DisposeAsync()
    {
        _http.Dispose();
        if (_relay is not null)
        {
            await _relay.DisposeAsync();
        }
    }
}
