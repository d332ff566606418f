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
        foreach (var queue in new[] { SnsSqsNames.Queue(subscription), SnsSqsNames.DeadLetterQueue(subscription) })
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
        }
        catch (Exception ex) when (ex is SnsException or HttpRequestException)
        {
            // Cleanup is best effort.
        }
    }

    public async ValueTask DisposeAsync()
    {
        _clients?.Dispose();
        if (_local is not null)
        {
            await _local.DisposeAsync();
        }
    }
}
