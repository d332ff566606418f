using System.Collections.Concurrent;
using System.Globalization;
using System.Text.Json;
using Amazon.Runtime;
using Amazon.SQS;
using Amazon.SQS.Model;
using CloudNative.CloudEvents;
using Messaging.Aws.Sns;
using Messaging.DeadLetters;
using Messaging.Topology;
using Messaging.Transport;
using Microsoft.Extensions.Logging;

namespace Messaging.Aws;

/// <summary>
/// The SNS/SQS transport. A topic is a standard SNS topic; a subscription is an SQS queue subscribed to it with raw
/// message delivery, a queue policy that lets the topic send to it, and a redrive policy to its own dead-letter queue
/// (<c>{queue}-dead-letter</c>). Attempts are SQS's <c>ApproximateReceiveCount</c>; a retry makes the message
/// invisible for the backoff delay (ChangeMessageVisibility), so the next receive counts the next attempt, also after a
/// consumer crash. The redrive policy's <c>maxReceiveCount</c> (MaxAttempts plus an allowance) is only a safety net
/// for consumers that crash: the contract layer dead-letters explicitly, with metadata, at MaxAttempts.
/// </summary>
public sealed class SnsSqsTransport : IMessageTransport
{
    /// <summary>The name that selects this transport in configuration (<c>Messaging:Transport</c>, options in <c>Messaging:SnsSqs</c>).</summary>
    public const string TransportName = "SnsSqs";

    /// <summary>SQS's upper bound on a message's visibility timeout, hence on one retry delay.</summary>
    public static readonly TimeSpan MaxRetryDelay = TimeSpan.FromHours(12);

    private const int DeadLetterRetentionSeconds = 14 * 24 * 3600; // SQS's maximum

    private readonly ConcurrentDictionary<string, string> _topicArns = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, string> _queueUrls = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<SqsReceiver, byte> _receivers = new();
    private readonly ILogger _logger;
    private readonly SqsDeadLetterStore _deadLetters;
    private int _disposed;

    /// <summary>
    /// Creates the transport and its SNS and SQS clients (no call is made here). Credentials come from the options when
    /// <see cref="SnsSqsTransportOptions.AccessKeyId"/> is set, else from the AWS SDK's usual chain (environment, profile, instance role).
    /// </summary>
    /// <param name="options">Region, endpoints, credentials, polling and size settings (<c>Messaging:SnsSqs</c>).</param>
    /// <param name="extensionAttributes">Declared extension attributes, read back with their types.</param>
    /// <param name="loggerFactory">For the transport's warnings.</param>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> or <paramref name="loggerFactory"/> is null.</exception>
    /// <exception cref="ArgumentException">The options are invalid (a malformed URL or region, a limit out of range, ...); the message lists every problem.</exception>
    public SnsSqsTransport(SnsSqsTransportOptions options, IReadOnlyList<CloudEventAttribute> extensionAttributes, ILoggerFactory loggerFactory)
        : this(options, extensionAttributes, loggerFactory, snsClient: null)
    {
    }

    /// <summary>With another SNS client (tests; later the official SDK's): the client stays an implementation detail.</summary>
    internal SnsSqsTransport(SnsSqsTransportOptions options, IReadOnlyList<CloudEventAttribute> extensionAttributes, ILoggerFactory loggerFactory, ISnsClient? snsClient)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        var problems = SnsSqsOptionsValidator.Problems(options);
        if (problems.Count > 0)
        {
            throw new ArgumentException(string.Join(" ", problems), nameof(options));
        }
        Options = options;
        _logger = loggerFactory.CreateLogger<SnsSqsTransport>();
        Clients = new SnsSqsClients(options, snsClient);
        Codec = new SnsSqsCodec(extensionAttributes ?? [], options.MaxEventSizeBytes);
        Capabilities = new TransportCapabilities
        {
            MaxEventSizeBytes = options.MaxEventSizeBytes,
            // SNS standard topics and SQS standard queues do not keep order.
            OrderingKeys = false,
            // A visibility change refused for a receipt handle (the message was received again) is a lost lease.
            ReportsLostLeases = true,
        };
        _deadLetters = new SqsDeadLetterStore(this);
    }

    /// <inheritdoc />
    public string Name => TransportName;

    /// <inheritdoc />
    public TransportCapabilities Capabilities { get; }

    /// <inheritdoc />
    public IDeadLetterStore DeadLetters => _deadLetters;

    /// <summary>Throttling and failures on AWS's side (5xx), network failures and timeouts.</summary>
    public bool IsTransient(Exception exception) => exception switch
    {
        SnsException sns => sns.IsTransient,
        Amazon.Runtime.AmazonServiceException aws => (int)aws.StatusCode >= 500 || (int)aws.StatusCode == 429
            || aws.ErrorCode is "Throttling" or "ThrottlingException" or "RequestThrottled" or "ServiceUnavailable" or "InternalError",
        TimeoutException or IOException or HttpRequestException => true,
        _ => false,
    };

    internal SnsSqsTransportOptions Options { get; }

    internal SnsSqsClients Clients { get; }

    internal SnsSqsCodec Codec { get; }

    internal ILogger Logger => _logger;

    // ---- provisioning --------------------------------------------------------------------------

    /// <inheritdoc />
    public async Task ProvisionAsync(MessagingTopology topology, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(topology);
        foreach (var topic in topology.Topics)
        {
            await EnsureTopicAsync(topic, cancellationToken).ConfigureAwait(false);
        }
        foreach (var subscription in topology.Subscriptions)
        {
            await ProvisionSubscriptionAsync(subscription, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task<string> EnsureTopicAsync(string topic, CancellationToken cancellationToken)
    {
        var arn = await Clients.Sns.CreateTopicAsync(SnsSqsNames.Topic(topic), cancellationToken).ConfigureAwait(false);
        _topicArns[topic] = arn;
        return arn;
    }

    private async Task ProvisionSubscriptionAsync(SubscriptionDefinition subscription, CancellationToken cancellationToken)
    {
        var topicArn = await EnsureTopicAsync(subscription.Topic, cancellationToken).ConfigureAwait(false);
        var deadLetterUrl = await EnsureQueueAsync(SnsSqsNames.DeadLetterQueue(subscription.Name), cancellationToken).ConfigureAwait(false);
        await Clients.Sqs.SetQueueAttributesAsync(deadLetterUrl, new Dictionary<string, string>
        {
            ["MessageRetentionPeriod"] = DeadLetterRetentionSeconds.ToString(CultureInfo.InvariantCulture),
        }, cancellationToken).ConfigureAwait(false);
        var deadLetterArn = await QueueArnAsync(deadLetterUrl, cancellationToken).ConfigureAwait(false);

        var queueUrl = await EnsureQueueAsync(SnsSqsNames.Queue(subscription.Name), cancellationToken).ConfigureAwait(false);
        var queueArn = await QueueArnAsync(queueUrl, cancellationToken).ConfigureAwait(false);
        // Set every time rather than at creation: CreateQueue refuses an existing queue whose attributes differ, and
        // provisioning must converge an existing queue onto the current settings.
        await Clients.Sqs.SetQueueAttributesAsync(queueUrl, new Dictionary<string, string>
        {
            ["VisibilityTimeout"] = VisibilitySeconds(Options.VisibilityTimeout).ToString(CultureInfo.InvariantCulture),
            ["RedrivePolicy"] = RedrivePolicy(deadLetterArn, MaxReceiveCount(subscription)),
            ["Policy"] = QueuePolicy(queueArn, topicArn),
        }, cancellationToken).ConfigureAwait(false);

        string subscriptionArn;
        try
        {
            subscriptionArn = await Clients.Sns.SubscribeQueueAsync(topicArn, queueArn, rawMessageDelivery: true, cancellationToken).ConfigureAwait(false);
        }
        catch (SnsException ex) when (ex.ErrorCode == "InvalidParameter")
        {
            // The subscription exists with other attributes (raw delivery off): take it as it is and fix the attribute below.
            subscriptionArn = await Clients.Sns.SubscribeQueueAsync(topicArn, queueArn, rawMessageDelivery: null, cancellationToken).ConfigureAwait(false);
        }
        await Clients.Sns.SetSubscriptionAttributeAsync(subscriptionArn, "RawMessageDelivery", "true", cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The redrive limit: more than any explicit retry sequence needs, so only crashes ever reach it.</summary>
    internal int MaxReceiveCount(SubscriptionDefinition subscription) =>
        Math.Clamp(subscription.Retry.MaxAttempts + Options.CrashRedeliveryAllowance, 1, 1000);

    internal static string RedrivePolicy(string deadLetterArn, int maxReceiveCount) => JsonSerializer.Serialize(new Dictionary<string, object>
    {
        ["deadLetterTargetArn"] = deadLetterArn,
        ["maxReceiveCount"] = maxReceiveCount,
    });

    /// <summary>Lets SNS deliver to the queue from this topic only (real AWS drops deliveries without it).</summary>
    internal static string QueuePolicy(string queueArn, string topicArn) => JsonSerializer.Serialize(new
    {
        Version = "2012-10-17",
        Statement = new[]
        {
            new
            {
                Sid = "AllowTopicToSend",
                Effect = "Allow",
                Principal = new { Service = "sns.amazonaws.com" },
                Action = "sqs:SendMessage",
                Resource = queueArn,
                Condition = new { ArnEquals = new Dictionary<string, string> { ["aws:SourceArn"] = topicArn } },
            },
        },
    });

    private async Task<string> EnsureQueueAsync(string queueName, CancellationToken cancellationToken)
    {
        try
        {
            var existing = await Clients.Sqs.GetQueueUrlAsync(queueName, cancellationToken).ConfigureAwait(false);
            _queueUrls[queueName] = existing.QueueUrl;
            return existing.QueueUrl;
        }
        catch (QueueDoesNotExistException)
        {
            // Created below.
        }
        var created = await Clients.Sqs.CreateQueueAsync(new CreateQueueRequest { QueueName = queueName }, cancellationToken).ConfigureAwait(false);
        _queueUrls[queueName] = created.QueueUrl;
        return created.QueueUrl;
    }

    private async Task<string> QueueArnAsync(string queueUrl, CancellationToken cancellationToken)
    {
        var attributes = await Clients.Sqs.GetQueueAttributesAsync(new GetQueueAttributesRequest { QueueUrl = queueUrl, AttributeNames = ["QueueArn"] }, cancellationToken)
            .ConfigureAwait(false);
        if (attributes.Attributes is null || !attributes.Attributes.TryGetValue("QueueArn", out var arn) || string.IsNullOrEmpty(arn))
        {
            throw new InvalidOperationException($"SQS did not return the ARN of queue {queueUrl}.");
        }
        return arn;
    }

    /// <summary>The URL of a queue, looked up once; a clear error when it does not exist.</summary>
    internal async Task<string> QueueUrlAsync(string queueName, string subscription, CancellationToken cancellationToken)
    {
        if (_queueUrls.TryGetValue(queueName, out var url))
        {
            return url;
        }
        try
        {
            var response = await Clients.Sqs.GetQueueUrlAsync(queueName, cancellationToken).ConfigureAwait(false);
            _queueUrls[queueName] = response.QueueUrl;
            return response.QueueUrl;
        }
        catch (QueueDoesNotExistException ex)
        {
            throw new InvalidOperationException(
                $"SQS queue '{queueName}' of subscription '{subscription}' does not exist at {Clients.Endpoint}. Enable Messaging:Provisioning or create it.", ex);
        }
    }

    internal static int VisibilitySeconds(TimeSpan timeout) => (int)Math.Clamp(Math.Ceiling(timeout.TotalSeconds), 0, MaxRetryDelay.TotalSeconds);

    // ---- publishing ----------------------------------------------------------------------------

    /// <summary>
    /// Publishes the events to the topic's SNS topic with PublishBatch (at most 10 entries and 256 KiB per call), several
    /// calls at once up to <see cref="SnsSqsTransportOptions.MaxConcurrentPublishes"/>, and completes once SNS has accepted
    /// every one. Publishing never creates a topic.
    /// </summary>
    /// <exception cref="Messaging.Envelope.EventTooLargeException">An event is larger than <see cref="SnsSqsTransportOptions.MaxEventSizeBytes"/>.</exception>
    /// <exception cref="Messaging.Publishing.EventPublishException">SNS refused an entry, the topic does not exist, or the call failed after the SDK's retries.</exception>
    public async Task PublishAsync(string topic, IReadOnlyList<CloudEvent> events, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(events);
        if (events.Count == 0)
        {
            return;
        }
        // Encode everything first: an oversized event fails the call before anything is sent.
        var messages = new SqsWireMessage[events.Count];
        for (var i = 0; i < events.Count; i++)
        {
            messages[i] = Codec.Encode(events[i]);
        }
        var topicArn = await TopicArnAsync(topic, cancellationToken).ConfigureAwait(false);
        try
        {
            if (messages.Length == 1)
            {
                await Clients.Sns.PublishAsync(topicArn, ToSns(messages[0]), cancellationToken).ConfigureAwait(false);
                return;
            }
            var batches = Batch(messages);
            await Parallel.ForEachAsync(batches, new ParallelOptions { MaxDegreeOfParallelism = Options.MaxConcurrentPublishes, CancellationToken = cancellationToken },
                (batch, ct) => new ValueTask(PublishBatchAsync(topicArn, batch, ct))).ConfigureAwait(false);
        }
        catch (SnsException ex) when (ex.ErrorCode == "NotFound")
        {
            _topicArns.TryRemove(topic, out _);
            throw new InvalidOperationException(
                $"SNS topic '{SnsSqsNames.Topic(topic)}' ({topicArn}) does not exist at {Clients.SnsEndpoint}. Provision the topology (Messaging:Provisioning) or create the topic.", ex);
        }
    }

    /// <summary>PublishBatch takes at most 10 entries and 256 KiB in total.</summary>
    internal static List<List<SqsWireMessage>> Batch(IReadOnlyList<SqsWireMessage> messages)
    {
        var batches = new List<List<SqsWireMessage>>();
        var current = new List<SqsWireMessage>();
        var bytes = 0;
        foreach (var message in messages)
        {
            var size = message.WireSize;
            if (current.Count == 10 || (current.Count > 0 && bytes + size > SnsSqsCodec.MaxWireBytes))
            {
                batches.Add(current);
                current = [];
                bytes = 0;
            }
            current.Add(message);
            bytes += size;
        }
        if (current.Count > 0)
        {
            batches.Add(current);
        }
        return batches;
    }

    private async Task PublishBatchAsync(string topicArn, List<SqsWireMessage> batch, CancellationToken cancellationToken)
    {
        var pending = batch.Select((m, i) => new SnsBatchEntry(i.ToString(CultureInfo.InvariantCulture), ToSns(m))).ToList();
        for (var attempt = 0; ; attempt++)
        {
            var failures = await Clients.Sns.PublishBatchAsync(topicArn, pending, cancellationToken).ConfigureAwait(false);
            if (failures.Count == 0)
            {
                return;
            }
            var refused = failures.FirstOrDefault(f => f.SenderFault);
            if (refused is not null || attempt >= Options.MaxRetries)
            {
                var failure = refused ?? failures[0];
                throw new SnsException($"SNS refused {failures.Count} of {pending.Count} events in a batch: {failure.Code}: {failure.Message}", failure.Code, 400, null);
            }
            // SNS failed on its side for these entries only: send them again.
            var retry = failures.Select(f => f.Id).ToHashSet(StringComparer.Ordinal);
            pending = pending.Where(e => retry.Contains(e.Id)).ToList();
            await Task.Delay(TimeSpan.FromMilliseconds(100 * (1 << Math.Min(attempt, 6))), cancellationToken).ConfigureAwait(false);
        }
    }

    private static SnsMessage ToSns(SqsWireMessage message) => new(message.Body, message.Attributes);

    /// <summary>
    /// The ARN of a topic: from provisioning; else formed from <see cref="SnsSqsTransportOptions.AccountId"/> or the account
    /// of a topic already seen; else found with ListTopics. Publishing never creates a topic.
    /// </summary>
    private async Task<string> TopicArnAsync(string topic, CancellationToken cancellationToken)
    {
        if (_topicArns.TryGetValue(topic, out var arn))
        {
            return arn;
        }
        var name = SnsSqsNames.Topic(topic);
        var prefix = Options.AccountId is { Length: > 0 } account
            ? $"arn:{Partition(Clients.Region)}:sns:{Clients.Region}:{account}:"
            : _topicArns.Values.Select(a => a[..(a.LastIndexOf(':') + 1)]).FirstOrDefault();
        if (prefix is not null)
        {
            arn = prefix + name;
        }
        else
        {
            arn = await Clients.Sns.FindTopicArnAsync(name, cancellationToken).ConfigureAwait(false)
                ?? throw new InvalidOperationException(
                    $"SNS topic '{name}' does not exist at {Clients.SnsEndpoint}. Provision the topology (Messaging:Provisioning) or create the topic.");
        }
        _topicArns[topic] = arn;
        return arn;
    }

    private static string Partition(string region) =>
        region.StartsWith("cn-", StringComparison.Ordinal) ? "aws-cn" : region.StartsWith("us-gov-", StringComparison.Ordinal) ? "aws-us-gov" : "aws";

    // ---- consuming -----------------------------------------------------------------------------

    /// <inheritdoc />
    public async Task<ITransportReceiver> StartReceiverAsync(ReceivePipeline pipeline, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        var subscription = pipeline.Subscription;
        if (subscription.Ordered)
        {
            throw new NotSupportedException($"Subscription '{subscription.Name}' asks for ordering, which the {TransportName} transport does not support (SNS standard topics do not keep order).");
        }
        var queueUrl = await QueueUrlAsync(SnsSqsNames.Queue(subscription.Name), subscription.Name, cancellationToken).ConfigureAwait(false);
        var deadLetterUrl = await QueueUrlAsync(SnsSqsNames.DeadLetterQueue(subscription.Name), subscription.Name, cancellationToken).ConfigureAwait(false);
        var receiver = new SqsReceiver(this, pipeline, queueUrl, deadLetterUrl);
        _receivers.TryAdd(receiver, 0);
        receiver.Start();
        return receiver;
    }

    internal void Forget(SqsReceiver receiver) => _receivers.TryRemove(receiver, out _);

    // ---- health --------------------------------------------------------------------------------

    /// <summary>
    /// One GetQueueAttributes call on the queue of a subscription this process consumes (with the client that retries once,
    /// so an outage shows within the check's timeout); healthy without a call when it consumes none.
    /// </summary>
    public async Task<TransportHealth> CheckHealthAsync(CancellationToken cancellationToken)
    {
        var queueUrl = _receivers.Keys.Select(r => r.QueueUrl).Order(StringComparer.Ordinal).FirstOrDefault();
        if (queueUrl is null)
        {
            return TransportHealth.Healthy($"SQS at {Clients.Endpoint}: no subscription consumed to check.");
        }
        try
        {
            var response = await Clients.SqsReceive.GetQueueAttributesAsync(queueUrl, ["ApproximateNumberOfMessages"], cancellationToken).ConfigureAwait(false);
            var depth = response.Attributes is { } attributes && attributes.TryGetValue("ApproximateNumberOfMessages", out var value) ? value : "?";
            return TransportHealth.Healthy($"SQS at {Clients.Endpoint} answers (queue {queueUrl}: about {depth} message(s) waiting).");
        }
        catch (AmazonServiceException ex) when (!cancellationToken.IsCancellationRequested)
        {
            return TransportHealth.Unhealthy($"SQS at {Clients.Endpoint} refused GetQueueAttributes on {queueUrl}: {(int)ex.StatusCode} {ex.ErrorCode} {ex.Message}", ex);
        }
    }

    // ---- backlog -------------------------------------------------------------------------------

    /// <summary>
    /// Waiting: the subscription queue's ApproximateNumberOfMessages (visible messages; those received and not yet deleted
    /// and those delayed are not counted). Dead letters: the dead-letter store's count. No age: SQS reports the age of the
    /// oldest message only as a CloudWatch metric.
    /// </summary>
    public async Task<SubscriptionBacklog?> GetBacklogAsync(SubscriptionDefinition subscription, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(subscription);
        const string visible = "ApproximateNumberOfMessages";
        var queueUrl = await QueueUrlAsync(SnsSqsNames.Queue(subscription.Name), subscription.Name, cancellationToken).ConfigureAwait(false);
        var response = await Clients.SqsReceive.GetQueueAttributesAsync(queueUrl, [visible], cancellationToken).ConfigureAwait(false);
        long? waiting = response.Attributes is { } attributes && attributes.TryGetValue(visible, out var value)
            && long.TryParse(value, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var count) ? count : null;
        var deadLetters = await SubscriptionBacklog.CountDeadLettersAsync(this, subscription, cancellationToken).ConfigureAwait(false);
        return new SubscriptionBacklog(waiting, deadLetters, OldestAge: null);
    }

    /// <summary>
    /// Stops every receiver, abandoning running handlers without waiting for them (their messages become visible again after
    /// the visibility timeout, with the receive count one higher), then disposes the SNS and SQS clients.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }
        // Running handlers are abandoned, not awaited: their messages stay invisible until the visibility timeout and
        // are then received again, with the receive count (the attempt number) incremented.
        foreach (var receiver in _receivers.Keys)
        {
            await receiver.DisposeAsync().ConfigureAwait(false);
        }
        Clients.Dispose();
    }
}
