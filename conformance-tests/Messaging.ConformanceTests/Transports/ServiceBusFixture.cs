using Azure.Messaging.ServiceBus;
using Azure.Messaging.ServiceBus.Administration;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.Hosting;
using Messaging.LocalServiceBus;
using Messaging.ServiceBus;
using Microsoft.Extensions.DependencyInjection;

namespace Messaging.ConformanceTests.Transports;

/// <summary>
/// Azure Service Bus: by default the in-process local endpoint (AMQP plus the ATOM administration API on its own port),
/// which the restart case stops and starts keeping its state. With <c>MESSAGING_SERVICEBUS_CONNECTION_STRING</c> (and,
/// when the administration API is served elsewhere, as on the official emulator's port 5300,
/// <c>MESSAGING_SERVICEBUS_ADMIN_CONNECTION_STRING</c>) the same suite runs against the official emulator or a real namespace.
/// </summary>
public sealed class ServiceBusFixture : ITransportFixture, IAsyncLifetime
{
    private LocalServiceBusEndpoint? _local;
    private ServiceBusClient? _client;
    private ServiceBusAdministrationClient? _administration;
    private string? _connectionString;
    private string? _administrationConnectionString;

    public string TransportName => ServiceBusTransport.TransportName;

    public string? UnavailableReason { get; private set; }

    public bool CanRestartBroker => _local is not null;

    public async ValueTask InitializeAsync()
    {
        _connectionString = Environment.GetEnvironmentVariable("MESSAGING_SERVICEBUS_CONNECTION_STRING");
        _administrationConnectionString = Environment.GetEnvironmentVariable("MESSAGING_SERVICEBUS_ADMIN_CONNECTION_STRING");
        var where = "the external Service Bus";
        try
        {
            if (string.IsNullOrWhiteSpace(_connectionString))
            {
                where = "the local Service Bus endpoint";
                _local = await LocalServiceBusEndpoint.StartAsync(cancellationToken: TestContext.Current.CancellationToken);
                _connectionString = _local.ConnectionString;
                _administrationConnectionString = _local.AdministrationConnectionString;
            }
            _client = new ServiceBusClient(_connectionString);
            _administration = new ServiceBusAdministrationClient(_administrationConnectionString ?? _connectionString);
            // One administration round trip proves both that the endpoint answers and that the credentials work.
            await _administration.TopicExistsAsync("ct-probe", TestContext.Current.CancellationToken);
        }
        catch (Exception ex)
        {
            UnavailableReason = $"{where} is not usable: {ex.Message}";
        }
    }

    /// <summary>The settings of <see cref="Apply"/> as configuration.</summary>
    public IReadOnlyDictionary<string, string?>? ProcessSettings => new Dictionary<string, string?>
    {
        ["Messaging:Transport"] = ServiceBusTransport.TransportName,
        ["Messaging:ServiceBus:ConnectionString"] = _connectionString,
        ["Messaging:ServiceBus:AdministrationConnectionString"] = _administrationConnectionString,
        ["Messaging:ServiceBus:ReceiveWaitTime"] = "00:00:05",
        ["Messaging:ServiceBus:LockDuration"] = "00:00:10",
    };

    public void Configure(IServiceCollection services, MessagingBuilder messaging)
    {
        messaging.AddServiceBus(o => Apply(o)).UseTransport(ServiceBusTransport.TransportName);
    }

    /// <summary>The settings every host of the suite uses; tests of the adapter itself start from them too.</summary>
    public ServiceBusTransportOptions Apply(ServiceBusTransportOptions o)
    {
        o.ConnectionString = _connectionString;
        o.AdministrationConnectionString = _administrationConnectionString;
        // A shorter wait keeps graceful stops of idle receivers quick in a suite that starts and stops many hosts.
        o.ReceiveWaitTime = TimeSpan.FromSeconds(5);
        // Short locks: a crashed consumer's message comes back within the cases' waits (and running handlers renew theirs).
        o.LockDuration = TimeSpan.FromSeconds(10);
        return o;
    }

    /// <summary>A client of the namespace under test, for checks on the wire.</summary>
    public ServiceBusClient Client => _client ?? throw new InvalidOperationException(UnavailableReason);

    /// <summary>The administration client of the namespace under test.</summary>
    public ServiceBusAdministrationClient Administration => _administration ?? throw new InvalidOperationException(UnavailableReason);

    public IDictionary<string, string?> CrashLimitSettings { get; } = new Dictionary<string, string?> { ["Messaging:ServiceBus:MaxDeliveryCount"] = "2" };

    public void UseLongLeases(IServiceCollection services) =>
        services.PostConfigure<ServiceBusTransportOptions>(o => o.LockDuration = ITransportFixture.LongLease);

    public string BinaryAttributeName(string attribute) => ServiceBusCloudEventCodec.AttributePrefixed(attribute);

    public async Task PublishRawAsync(string topic, IReadOnlyDictionary<string, string> headers, byte[] body, string? contentType, CancellationToken cancellationToken)
    {
        await using var sender = _client!.CreateSender(topic);
        var message = new ServiceBusMessage(body) { ContentType = contentType };
        foreach (var (key, value) in headers)
        {
            message.ApplicationProperties[key] = value;
        }
        await sender.SendMessageAsync(message, cancellationToken);
    }

    public async Task<string?> PublishRawAsync(string topic, RawMessage message, CancellationToken cancellationToken)
    {
        if (CannotCarry(message) is { } reason)
        {
            throw new NotSupportedException(reason);
        }
        await using var sender = _client!.CreateSender(topic);
        var outgoing = new ServiceBusMessage(message.Body) { ContentType = message.ContentType, MessageId = message.MessageId };
        foreach (var (key, value) in message.Headers)
        {
            outgoing.ApplicationProperties[key] = value is Utf8Text text ? text.TryGetText() : value;
        }
        await sender.SendMessageAsync(outgoing, cancellationToken);
        return message.MessageId;
    }

    /// <summary>
    /// Application properties are AMQP simple types (string, integers, booleans, timestamps, binary, ...); AMQP 1.0 allows no
    /// maps or lists there, strings are Unicode (the SDK takes .NET strings), and the message header (properties
    /// included) is limited to 64 KB on the Standard tier.
    /// </summary>
    public string? CannotCarry(RawMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        long size = 0;
        foreach (var (key, value) in message.Headers)
        {
            switch (value)
            {
                case string text:
                    size += System.Text.Encoding.UTF8.GetByteCount(text);
                    break;
                case byte[] bytes:
                    size += bytes.Length;
                    break;
                case Utf8Text text when text.TryGetText() is { } decoded:
                    size += System.Text.Encoding.UTF8.GetByteCount(decoded);
                    break;
                case Utf8Text:
                    return $"application property '{key}': the bytes are not UTF-8 and AMQP strings are Unicode text (binary would be a different type)";
                case int or long or bool or DateTimeOffset:
                    size += 8;
                    break;
                default:
                    return $"application property '{key}': AMQP 1.0 application properties hold simple types only, not a {value?.GetType().Name ?? "null"}";
            }
            size += System.Text.Encoding.UTF8.GetByteCount(key) + 8;
        }
        return size > 60 * 1024 ? $"the application properties ({size} bytes) exceed the 64 KB message header limit of Service Bus (Standard tier)" : null;
    }

    /// <summary>AMQP binary is read as the CloudEvents Binary type: base64 (README, Service Bus mapping).</summary>
    public string BinaryAttributeText(byte[] value) => Convert.ToBase64String(value);

    public string? PriorAttemptsHeader => ServiceBusNames.PriorAttemptsProperty;

    public bool CanInjectFaults => _local is not null;

    public bool BrokenConsumersStayBroken => false;

    /// <summary>The endpoint rejects every sent message with server-busy (Service Bus throttling) until the fault ends.</summary>
    public Task<IAsyncDisposable> BlockPublishesAsync(CancellationToken cancellationToken) =>
        Task.FromResult(Fault.Until(_local!.RefuseSends()));

    /// <summary>The endpoint detaches every receive link of the subscription and of its redelivery queue (amqp:link:detach-forced); the connection stays.</summary>
    public Task<IAsyncDisposable> BreakConsumersAsync(string topic, string subscription, CancellationToken cancellationToken)
    {
        var detached = _local!.DetachReceivers($"{ServiceBusNames.Topic(topic)}/Subscriptions/{ServiceBusNames.Subscription(subscription)}")
            + _local.DetachReceivers(ServiceBusNames.RedeliveryQueue(subscription));
        Assert.True(detached > 0, $"no receive link of subscription {subscription} was attached to detach");
        return Task.FromResult(Fault.Over);
    }

    /// <summary>Every lock held on the subscription and its redelivery queue expires now.</summary>
    public Task ExpireLeasesAsync(string topic, string subscription, CancellationToken cancellationToken)
    {
        var expired = _local!.ExpireLocks($"{ServiceBusNames.Topic(topic)}/Subscriptions/{ServiceBusNames.Subscription(subscription)}")
            + _local.ExpireLocks(ServiceBusNames.RedeliveryQueue(subscription));
        Assert.True(expired > 0, $"no lock was held on subscription {subscription}");
        return Task.CompletedTask;
    }

    public async Task RestartBrokerAsync(CancellationToken cancellationToken)
    {
        if (_local is null)
        {
            throw new NotSupportedException("The suite only restarts the local Service Bus endpoint it runs itself; an external namespace or emulator is not restarted.");
        }
        await _local.StopListeningAsync();
        // An outage long enough for connections to drop and for clients to retry.
        await Task.Delay(TimeSpan.FromSeconds(2), cancellationToken);
        await _local.StartListeningAsync();
    }

    public async Task DeleteSubscriptionAsync(string topic, string subscription)
    {
        if (_administration is null)
        {
            return;
        }
        foreach (var delete in new Func<Task>[]
        {
            () => _administration.DeleteSubscriptionAsync(topic, subscription),
            () => _administration.DeleteQueueAsync(ServiceBusNames.RedeliveryQueue(subscription)),
            () => _administration.DeleteTopicAsync(topic),
        })
        {
            try
            {
                await delete();
            }
            catch (Exception ex) when (ex is ServiceBusException or Azure.RequestFailedException or HttpRequestException)
            {
                // Cleanup is best effort.
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_client is not null)
        {
            await _client.DisposeAsync();
        }
        if (_local is not null)
        {
            await _local.DisposeAsync();
        }
    }
}
