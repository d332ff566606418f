using System.Diagnostics;
using System.Text;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.Hosting;
using Messaging.RabbitMQ;
using Microsoft.Extensions.DependencyInjection;
using RabbitMQ.Client;

namespace Messaging.ConformanceTests.Transports;

/// <summary>
/// A RabbitMQ broker given by <c>MESSAGING_RABBITMQ_URI</c> (default amqp://guest:guest@127.0.0.1:5672/). The restart
/// case runs <c>MESSAGING_RABBITMQ_CTL</c> (default <c>rabbitmqctl</c>, when the broker is local and the tool exists).
/// </summary>
public sealed class RabbitMqFixture : ITransportFixture, IAsyncLifetime
{
    private readonly string _uri = Environment.GetEnvironmentVariable("MESSAGING_RABBITMQ_URI") ?? "amqp://guest:guest@127.0.0.1:5672/";
    private readonly string? _ctl;
    private IConnection? _connection;

    public RabbitMqFixture()
    {
        var ctl = Environment.GetEnvironmentVariable("MESSAGING_RABBITMQ_CTL");
        if (ctl is null && (_uri.Contains("127.0.0.1", StringComparison.Ordinal) || _uri.Contains("localhost", StringComparison.Ordinal)))
        {
            ctl = new[] { "/usr/sbin/rabbitmqctl", "/usr/lib/rabbitmq/bin/rabbitmqctl", "/usr/local/sbin/rabbitmqctl" }.FirstOrDefault(File.Exists);
        }
        _ctl = string.IsNullOrEmpty(ctl) ? null : ctl;
    }

    public string TransportName => RabbitMqTransport.TransportName;

    public string? UnavailableReason { get; private set; }

    public bool CanRestartBroker => _ctl is not null;

    public async ValueTask InitializeAsync()
    {
        try
        {
            _connection = await new ConnectionFactory { Uri = new Uri(_uri), AutomaticRecoveryEnabled = true, NetworkRecoveryInterval = TimeSpan.FromSeconds(1) }
                .CreateConnectionAsync("conformance-fixture");
        }
        catch (Exception ex)
        {
            UnavailableReason = $"RabbitMQ is not reachable at {_uri}: {ex.Message}";
        }
    }

    public IReadOnlyDictionary<string, string?>? ProcessSettings => new Dictionary<string, string?>
    {
        ["Messaging:Transport"] = RabbitMqTransport.TransportName,
        ["Messaging:RabbitMQ:Uri"] = _uri,
    };

    public void Configure(IServiceCollection services, MessagingBuilder messaging)
    {
        messaging.AddRabbitMq(o => o.Uri = _uri).UseTransport(RabbitMqTransport.TransportName);
    }

    public IDictionary<string, string?> CrashLimitSettings { get; } = new Dictionary<string, string?> { ["Messaging:RabbitMQ:CrashDeliveryLimit"] = "2" };

    /// <summary>RabbitMQ deliveries have no lease: a message stays with its consumer until settled or the channel closes.</summary>
    public void UseLongLeases(IServiceCollection services)
    {
    }

    public string BinaryAttributeName(string attribute) => RabbitMqNames.AttributePrefix + attribute;

    public async Task PublishRawAsync(string topic, IReadOnlyDictionary<string, string> headers, byte[] body, string? contentType, CancellationToken cancellationToken)
    {
        await using var channel = await _connection!.CreateChannelAsync(new CreateChannelOptions(true, true), cancellationToken);
        var properties = new BasicProperties
        {
            Persistent = true,
            ContentType = contentType,
            Headers = headers.ToDictionary(h => h.Key, h => (object?)Encoding.UTF8.GetBytes(h.Value)),
        };
        await channel.BasicPublishAsync(topic, "raw", mandatory: false, properties, body, cancellationToken);
    }

    public async Task<string?> PublishRawAsync(string topic, RawMessage message, CancellationToken cancellationToken)
    {
        if (CannotCarry(message) is { } reason)
        {
            throw new NotSupportedException(reason);
        }
        await using var channel = await _connection!.CreateChannelAsync(new CreateChannelOptions(true, true), cancellationToken);
        var headers = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (key, value) in message.Headers)
        {
            headers[key] = ToFieldValue(value);
        }
        var properties = new BasicProperties
        {
            Persistent = true,
            ContentType = message.ContentType,
            MessageId = message.MessageId,
            Headers = headers,
        };
        await channel.BasicPublishAsync(topic, "raw", mandatory: false, properties, message.Body, cancellationToken);
        return message.MessageId;
    }

    /// <summary>
    /// The AMQP 0-9-1 field types RabbitMQ.Client writes: string and <see cref="Utf8Text"/> as long strings ('S', bytes on the
    /// wire, which is how the client sends <c>byte[]</c>), <c>byte[]</c> as the byte-array type ('x', <see cref="BinaryTableValue"/>,
    /// as the Java client sends <c>byte[]</c>), int ('I'), long ('l'), bool ('t'), timestamps ('T', whole seconds), nested
    /// tables ('F') and arrays ('A').
    /// </summary>
    private static object? ToFieldValue(object? value) => value switch
    {
        null => null,
        string text => text,
        byte[] bytes => new BinaryTableValue(bytes),
        Utf8Text text => text.Bytes,
        int or long or bool => value,
        DateTimeOffset time => new AmqpTimestamp(time.ToUnixTimeSeconds()),
        IDictionary<string, object?> table => table.ToDictionary(e => e.Key, e => ToFieldValue(e.Value), StringComparer.Ordinal),
        IEnumerable<object?> list => list.Select(ToFieldValue).ToList(),
        _ => throw new NotSupportedException($"No AMQP 0-9-1 field type for {value.GetType()}."),
    };

    public string? CannotCarry(RawMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (message.ContentType is { } contentType && Encoding.UTF8.GetByteCount(contentType) > 255)
        {
            return "content_type is an AMQP short string (at most 255 bytes)";
        }
        // Properties travel in one content-header frame, which cannot be split: it must fit the negotiated frame_max (128 KiB by default).
        long size = 0;
        foreach (var (key, value) in message.Headers)
        {
            size += Encoding.UTF8.GetByteCount(key) + 8 + FieldSize(value);
        }
        return size > 120 * 1024 ? $"the headers ({size} bytes) do not fit one AMQP content-header frame (frame_max 128 KiB)" : null;
    }

    private static long FieldSize(object? value) => value switch
    {
        string text => Encoding.UTF8.GetByteCount(text),
        byte[] bytes => bytes.Length,
        Utf8Text text => text.Bytes.Length,
        IDictionary<string, object?> table => table.Sum(e => e.Key.Length + 8 + FieldSize(e.Value)),
        IEnumerable<object?> list => list.Sum(v => 8 + FieldSize(v)),
        _ => 8,
    };

    /// <summary>RabbitMQ accepts byte arrays (and long strings, which arrive as bytes) as text: their UTF-8 (README, RabbitMQ mapping).</summary>
    public string BinaryAttributeText(byte[] value) => Encoding.UTF8.GetString(value);

    public string? PriorAttemptsHeader => RabbitMqNames.PriorAttemptsHeader;

    public async Task RestartBrokerAsync(CancellationToken cancellationToken)
    {
        await RunCtlAsync("stop_app", cancellationToken);
        await RunCtlAsync("start_app", cancellationToken);
        await RunCtlAsync("await_startup", cancellationToken);
    }

    /// <summary>Has the broker close every connection whose client-provided name contains <paramref name="clientName"/>; returns how many.</summary>
    public async Task<int> CloseConnectionsAsync(string clientName, CancellationToken cancellationToken)
    {
        if (_ctl is null)
        {
            throw new NotSupportedException("rabbitmqctl is not available to close connections.");
        }
        var listing = await RunCtlCoreAsync(["-q", "list_connections", "pid", "client_properties"], cancellationToken);
        var pids = listing.Split('\n').Where(line => line.Contains(clientName, StringComparison.Ordinal)).Select(line => line.Split('\t')[0].Trim()).ToList();
        foreach (var pid in pids)
        {
            await RunCtlCoreAsync(["close_connection", pid, "closed by a conformance test"], cancellationToken);
        }
        return pids.Count;
    }

    public bool CanInjectFaults => _ctl is not null;

    public bool BrokenConsumersStayBroken => false;

    /// <summary>The memory alarm: RabbitMQ blocks every publishing connection (connection.blocked) until it is cleared.</summary>
    public async Task<IAsyncDisposable> BlockPublishesAsync(CancellationToken cancellationToken)
    {
        await SetMemoryAlarmAsync(true, cancellationToken);
        return new Fault(() => SetMemoryAlarmAsync(false, CancellationToken.None));
    }

    /// <summary>
    /// The broker closes every consuming connection of the hosts under test (connection.close from the server, as an operator
    /// or a node shutting down does). RabbitMQ cases run one at a time, so these are the running case's connections only.
    /// </summary>
    public async Task<IAsyncDisposable> BreakConsumersAsync(string topic, string subscription, CancellationToken cancellationToken)
    {
        var closed = await CloseConnectionsAsync("(consume)", cancellationToken);
        Assert.True(closed > 0, "no consuming RabbitMQ connection was found to close");
        return Fault.Over;
    }

    /// <summary>A delivery's lease is the channel it came on: the broker closes the consuming connections.</summary>
    public async Task ExpireLeasesAsync(string topic, string subscription, CancellationToken cancellationToken) =>
        await BreakConsumersAsync(topic, subscription, cancellationToken);

    /// <summary>Sets off (or clears) the broker's memory alarm, under which RabbitMQ blocks every publishing connection.</summary>
    public Task SetMemoryAlarmAsync(bool on, CancellationToken cancellationToken) =>
        _ctl is null
            ? throw new NotSupportedException("rabbitmqctl is not available to set the memory alarm.")
            : RunCtlAsync(["set_vm_memory_high_watermark", on ? "0" : "0.4"], cancellationToken);

    /// <summary>Runs a rabbitmqctl command with its arguments.</summary>
    public Task<string> RunCtlAsync(string[] arguments, CancellationToken cancellationToken) =>
        _ctl is null ? throw new NotSupportedException("rabbitmqctl is not available.") : RunCtlCoreAsync(arguments, cancellationToken);

    private Task<string> RunCtlAsync(string command, CancellationToken cancellationToken) => RunCtlCoreAsync([command], cancellationToken);

    private async Task<string> RunCtlCoreAsync(string[] arguments, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo(_ctl!) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        var stdout = await process.StandardOutput.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{_ctl} {string.Join(' ', arguments)} failed ({process.ExitCode}): {await stderr}");
        }
        return stdout;
    }

    /// <summary>Declares a classic queue, as an operator or another application might, under a name the library uses.</summary>
    public async Task DeclareClassicQueueAsync(string queue, CancellationToken cancellationToken)
    {
        await using var channel = await _connection!.CreateChannelAsync(cancellationToken: cancellationToken);
        await channel.QueueDeclareAsync(queue, durable: true, exclusive: false, autoDelete: false, cancellationToken: cancellationToken);
    }

    /// <summary>Deletes one queue, as an operator would.</summary>
    public async Task DeleteQueueAsync(string queue, CancellationToken cancellationToken)
    {
        await using var channel = await _connection!.CreateChannelAsync(cancellationToken: cancellationToken);
        await channel.QueueDeleteAsync(queue, ifUnused: false, ifEmpty: false, cancellationToken: cancellationToken);
    }

    public async Task DeleteSubscriptionAsync(string topic, string subscription)
    {
        if (_connection is null)
        {
            return;
        }
        try
        {
            await using var channel = await _connection.CreateChannelAsync();
            await channel.QueueDeleteAsync(RabbitMqNames.Queue(subscription), ifUnused: false, ifEmpty: false);
            await channel.QueueDeleteAsync(RabbitMqNames.DeadLetterQueue(subscription), ifUnused: false, ifEmpty: false);
            // Retry queues exist per delay; these are the delays the suite's policies use (deleting a missing queue is a no-op).
            foreach (var ms in new[] { 50, 100, 200, 300, 600, 700, 1000, 2000, 4000, 8000 })
            {
                await channel.QueueDeleteAsync(RabbitMqNames.RetryQueue(subscription, TimeSpan.FromMilliseconds(ms)), ifUnused: false, ifEmpty: false);
            }
            await channel.ExchangeDeleteAsync(RabbitMqNames.Exchange(topic), ifUnused: false);
        }
        catch (Exception ex) when (ex is global::RabbitMQ.Client.Exceptions.OperationInterruptedException or global::RabbitMQ.Client.Exceptions.AlreadyClosedException)
        {
            // Cleanup is best effort.
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_connection is not null)
        {
            await _connection.DisposeAsync();
        }
    }
}
