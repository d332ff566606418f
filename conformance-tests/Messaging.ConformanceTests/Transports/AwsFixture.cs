using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using Amazon.SQS;
using Messaging.Aws;
using Messaging.Aws.Sns;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.Hosting;
using Messaging.LocalAws;
using Microsoft.Extensions.DependencyInjection;

namespace Messaging.ConformanceTests.Transports;

/// <summary>
/// SNS/SQS. By default a local SNS/SQS endpoint started in this process (so the broker-restart case can stop and start
/// its listener). <c>MESSAGING_AWS_SERVICE_URL</c> points the suite at another endpoint instead (LocalStack, or
/// <c>https://</c> regional AWS with <c>MESSAGING_AWS_SERVICE_URL=aws</c>), with the standard AWS variables for
/// region and credentials (<c>AWS_REGION</c>, <c>AWS_ACCESS_KEY_ID</c>, <c>AWS_SECRET_ACCESS_KEY</c>, <c>AWS_PROFILE</c>, ...).
/// </summary>
public sealed class AwsFixture : ITransportFixture, IAsyncLifetime
{
    /// <summary>Short, so that a message held by a crashed consumer comes back within the suite's waits.</summary>
    private static readonly TimeSpan VisibilityTimeout = TimeSpan.FromSeconds(5);

    private readonly string? _external = Environment.GetEnvironmentVariable("MESSAGING_AWS_SERVICE_URL");
    private LocalAwsEndpoint? _local;
    private SnsSqsClients? _clients;
    private SnsSqsTransportOptions _options = new();
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(30) };

    public string TransportName => SnsSqsTransport.TransportName;

    public string? UnavailableReason { get; private set; }

    /// <summary>The raw SNS and SQS clients, for tests that look at the wire.</summary>
    internal SnsSqsClients Clients => _clients ?? throw new InvalidOperationException(UnavailableReason);

    /// <summary>The transport settings the fixture uses.</summary>
    internal SnsSqsTransportOptions Options => _options;

    /// <summary>Only the in-process endpoint can be restarted (its listener stops and starts, its state stays).</summary>
    public bool CanRestartBroker => _local is not null;

    public async ValueTask InitializeAsync()
    {
        try
        {
            if (string.IsNullOrWhiteSpace(_external))
            {
                _local = await LocalAwsEndpoint.StartAsync();
                _options = new SnsSqsTransportOptions
                {
                    ServiceUrl = _local.ServiceUrl.ToString(),
                    Region = _local.Region,
                    AccessKeyId = "local",
                    SecretAccessKey = "local",
                };
            }
            else
            {
                _options = new SnsSqsTransportOptions
                {
                    ServiceUrl = _external.Equals("aws", StringComparison.OrdinalIgnoreCase) ? null : _external,
                    Region = Environment.GetEnvironmentVariable("AWS_REGION") ?? Environment.GetEnvironmentVariable("AWS_DEFAULT_REGION"),
                };
            }
            _options.VisibilityTimeout = VisibilityTimeout;
            _clients = new SnsSqsClients(_options);
            await _clients.Sqs.ListQueuesAsync(new Amazon.SQS.Model.ListQueuesRequest { MaxResults = 1 });
        }
        catch (Exception ex)
        {
            UnavailableReason = $"SNS/SQS is not reachable at {_options.ServiceUrl ?? "the AWS regional endpoints"}: {ex.Message}";
        }
    }

    public IReadOnlyDictionary<string, string?>? ProcessSettings
    {
        get
        {
            var settings = new Dictionary<string, string?> { ["Messaging:Transport"] = SnsSqsTransport.TransportName };
            void Set(string key, string? value)
            {
                if (value is not null)
                {
                    settings[$"Messaging:SnsSqs:{key}"] = value;
                }
            }
            Set("ServiceUrl", _options.ServiceUrl);
            Set("Region", _options.Region);
            Set("AccessKeyId", _options.AccessKeyId);
            Set("SecretAccessKey", _options.SecretAccessKey);
            Set("VisibilityTimeout", _options.VisibilityTimeout.ToString("c", System.Globalization.CultureInfo.InvariantCulture));
            return settings;
        }
    }

    public void Configure(IServiceCollection services, MessagingBuilder messaging)
    {
        var options = _options;
        messaging.AddSnsSqs(o =>
        {
            o.ServiceUrl = options.ServiceUrl;
            o.Region = options.Region;
            o.AccessKeyId = options.AccessKeyId;
            o.SecretAccessKey = options.SecretAccessKey;
            o.VisibilityTimeout = options.VisibilityTimeout;
        }).UseTransport(SnsSqsTransport.TransportName);
    }

    public void UseLongLeases(IServiceCollection services) =>
        services.PostConfigure<SnsSqsTransportOptions>(o => o.VisibilityTimeout = ITransportFixture.LongLease);

    /// <summary>With <c>MaxAttempts</c> 1 the redrive policy's maxReceiveCount is then 2.</summary>
    public IDictionary<string, string?> CrashLimitSettings { get; } = new Dictionary<string, string?> { ["Messaging:SnsSqs:CrashRedeliveryAllowance"] = "1" };

    public string BinaryAttributeName(string attribute) => SnsSqsCodec.AttributePrefix + attribute;

    /// <summary>Publishes through SNS, as another producer would: the body as text, headers and content type as message attributes.</summary>
    public async Task PublishRawAsync(string topic, IReadOnlyDictionary<string, string> headers, byte[] body, string? contentType, CancellationToken cancellationToken)
    {
        var attributes = headers.ToList();
        if (contentType is not null)
        {
            attributes.Add(new(SnsSqsCodec.ContentTypeAttribute, contentType));
        }
        var sns = _clients!.Sns;
        var arn = await sns.CreateTopicAsync(SnsSqsNames.Topic(topic), cancellationToken);
        await sns.PublishAsync(arn, new SnsMessage(Encoding.UTF8.GetString(body), attributes), cancellationToken);
    }

    /// <summary>
    /// Publishes through SNS with typed message attributes, as the AWS SDK's SNS client sends them (query protocol, Signature
    /// Version 4): strings and booleans (SNS has no boolean) as <c>String</c>, integers as <c>Number</c>, bytes as <c>Binary</c>,
    /// timestamps (SNS has none) as RFC 3339 <c>String</c>s. The SQS message gets an id of its own, so none is returned.
    /// </summary>
    public async Task<string?> PublishRawAsync(string topic, RawMessage message, CancellationToken cancellationToken)
    {
        if (CannotCarry(message) is { } reason)
        {
            throw new NotSupportedException(reason);
        }
        var arn = await Clients.Sns.CreateTopicAsync(SnsSqsNames.Topic(topic), cancellationToken);
        var parameters = new List<KeyValuePair<string, string>> { new("TopicArn", arn), new("Message", Encoding.UTF8.GetString(message.Body)) };
        var index = 0;
        foreach (var (name, dataType, value) in SnsAttributes(message))
        {
            var prefix = string.Create(CultureInfo.InvariantCulture, $"MessageAttributes.entry.{++index}.");
            parameters.Add(new(prefix + "Name", name));
            parameters.Add(new(prefix + "Value.DataType", dataType));
            parameters.Add(new(prefix + (dataType == "Binary" ? "Value.BinaryValue" : "Value.StringValue"), value));
        }
        var form = Encoding.UTF8.GetBytes(SnsQueryClient.FormEncode("Publish", parameters));
        using var request = new HttpRequestMessage(HttpMethod.Post, Clients.SnsEndpoint) { Content = new ByteArrayContent(form) };
        request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse("application/x-www-form-urlencoded; charset=utf-8");
        ((SnsQueryClient)Clients.Sns).Sign(request, form, await Clients.Credentials.GetCredentialsAsync(), DateTime.UtcNow);
        using var response = await _http.SendAsync(request, cancellationToken);
        if (!response.IsSuccessStatusCode)
        {
            throw new HttpRequestException($"SNS refused the raw message ({(int)response.StatusCode}): {await response.Content.ReadAsStringAsync(cancellationToken)}");
        }
        return null;
    }

    /// <summary>Each header as an SNS message attribute (name, data type, value; binary values in base64), then the content type.</summary>
    private static List<(string Name, string DataType, string Value)> SnsAttributes(RawMessage message)
    {
        var attributes = new List<(string, string, string)>();
        foreach (var (key, value) in message.Headers)
        {
            attributes.Add(value switch
            {
                byte[] bytes => (key, "Binary", Convert.ToBase64String(bytes)),
                int or long => (key, "Number", RawValues.AsText(value, out _)!),
                _ => (key, "String", RawValues.AsText(value, out _) ?? string.Empty),
            });
        }
        if (message.ContentType is not null)
        {
            attributes.Add((SnsSqsCodec.ContentTypeAttribute, "String", message.ContentType));
        }
        return attributes;
    }

    /// <summary>
    /// What SNS and SQS refuse: a body that is not text of the characters SQS accepts (or is empty); message attributes that
    /// are empty, not of String/Number/Binary, or hold characters SQS refuses; more than 10 attributes (raw message delivery
    /// to SQS carries at most 10; SNS drops the copy otherwise); more than 256 KiB in all.
    /// </summary>
    public string? CannotCarry(RawMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        string body;
        try
        {
            body = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(message.Body);
        }
        catch (DecoderFallbackException)
        {
            return "SNS and SQS bodies are text: the body is not UTF-8";
        }
        if (body.Length == 0 || !SnsSqsCodec.IsSqsText(body))
        {
            return "SNS and SQS bodies are non-empty text of the characters SQS accepts";
        }
        foreach (var (key, value) in message.Headers)
        {
            if (value is byte[] bytes)
            {
                if (bytes.Length == 0)
                {
                    return $"message attribute '{key}': Binary values must not be empty";
                }
                continue;
            }
            if (RawValues.AsText(value, out var reason) is not { } text)
            {
                return $"message attribute '{key}': SNS/SQS attributes are String, Number or Binary: {reason}";
            }
            if (text.Length == 0 || !SnsSqsCodec.IsSqsText(text))
            {
                return $"message attribute '{key}': SNS refuses empty values and characters outside those SQS accepts";
            }
        }
        if (message.ContentType is { } contentType && (contentType.Length == 0 || !SnsSqsCodec.IsSqsText(contentType)))
        {
            return "the content-type attribute: SNS refuses empty values and characters outside those SQS accepts";
        }
        var attributes = SnsAttributes(message);
        if (attributes.Count > SnsSqsCodec.MaxMessageAttributes)
        {
            return $"raw message delivery to SQS carries at most {SnsSqsCodec.MaxMessageAttributes} message attributes ({attributes.Count} needed)";
        }
        var size = Encoding.UTF8.GetByteCount(body) + attributes.Sum(a => Encoding.UTF8.GetByteCount(a.Name) + a.DataType.Length
            + (a.DataType == "Binary" ? Convert.FromBase64String(a.Value).Length : Encoding.UTF8.GetByteCount(a.Value)));
        return size > SnsSqsCodec.MaxWireBytes ? $"SNS and SQS messages are at most 256 KiB ({size} bytes)" : null;
    }

    /// <summary>A Binary message attribute is read as the CloudEvents Binary type: base64 (SnsSqsCodec, SqsMessageAttributes).</summary>
    public string BinaryAttributeText(byte[] value) => Convert.ToBase64String(value);

    public string? PriorAttemptsHeader => null;

    public bool CanInjectFaults => _local is not null;

    public bool BrokenConsumersStayBroken => true;

    /// <summary>SNS answers every publish with 503 ServiceUnavailable (as AWS does when it sheds load) until the fault ends.</summary>
    public Task<IAsyncDisposable> BlockPublishesAsync(CancellationToken cancellationToken) =>
        Task.FromResult(Fault.Until(_local!.RefuseRequests("sns")));

    /// <summary>SQS answers every request with 503 ServiceUnavailable until the fault ends: receives, deletes and visibility changes fail.</summary>
    public Task<IAsyncDisposable> BreakConsumersAsync(string topic, string subscription, CancellationToken cancellationToken) =>
        Task.FromResult(Fault.Until(_local!.RefuseRequests("sqs")));

    /// <summary>Every message in flight on the subscription's queue becomes visible now, as when its visibility timeout ends.</summary>
    public Task ExpireLeasesAsync(string topic, string subscription, CancellationToken cancellationToken)
    {
        var expired = _local!.ExpireVisibility(SnsSqsNames.Queue(subscription));
        Assert.True(expired > 0, $"no message was in flight on the queue of subscription {subscription}");
        return Task.CompletedTask;
    }

    public async Task RestartBrokerAsync(CancellationToken cancellationToken)
    {
        if (_local is null)
        {
            throw new NotSupportedException("Only the in-process SNS/SQS endpoint can be restarted; an external endpoint or AWS itself cannot.");
        }
        await _local.StopListeningAsync();
        await _local.StartListeningAsync();
    }

    public async Task DeleteSubscriptionAsync(string topic, string subscription)
    {
        if (_clients is null)
        {
            return;
        }
        foreach (var queue in new[]
                 {
                     SnsSqsNames.Queue(subscription), SnsSqsNames.DeadLetterQueue(subscription),
                     SnsSqsNames.FifoQueue(subscription), SnsSqsNames.FifoDeadLetterQueue(subscription),
                 })
        {
            try
            {
                var url = await _clients.Sqs.GetQueueUrlAsync(queue);
                await _clients.Sqs.DeleteQueueAsync(url.QueueUrl);
            }
            catch (Exception ex) when (ex is AmazonSQSException or HttpRequestException)
            {
                // Cleanup is best effort.
            }
        }
        try
        {
            var arn = await _clients.Sns.CreateTopicAsync(SnsSqsNames.Topic(topic), CancellationToken.None);
            await _clients.Sns.DeleteTopicAsync(arn, CancellationToken.None);
            var prefix = arn[..(arn.LastIndexOf(':') + 1)];
            await _clients.Sns.DeleteTopicAsync(prefix + SnsSqsNames.FifoTopic(topic), CancellationToken.None); // succeeds when missing
        }
        catch (Exception ex) when (ex is SnsException or HttpRequestException)
        {
            // Cleanup is best effort.
        }
    }

    public async ValueTask DisposeAsync()
    {
        _clients?.Dispose();
        _http.Dispose();
        if (_local is not null)
        {
            await _local.DisposeAsync();
        }
    }
}
