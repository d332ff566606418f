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
/// The SNS/SQS transport. A topic is a standard SNS topic, or a FIFO topic (<c>{topic}.fifo</c>) when it has an ordered
/// subscription, is listed in <see cref="SnsSqsTransportOptions.FifoTopics"/> or already exists as one; a subscription is an
/// SQS queue (a FIFO queue <c>{queue}.fifo</c> when ordered) subscribed to it with raw message delivery, a queue policy
/// that lets the topic send to it, and a redrive policy to its own dead-letter queue (<c>{queue}-dead-letter</c>, FIFO
/// for a FIFO queue). On a FIFO topic the message group is the event's <c>partitionkey</c> (its id when it has none) and
/// the deduplication id is the event's id. Attempts are SQS's <c>ApproximateReceiveCount</c>; a retry makes the message
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

    /// <summary>How long a publisher trusts that a topic is standard before it looks for a FIFO topic of that name again.</summary>
    internal static readonly TimeSpan StandardTopicRecheck = TimeSpan.FromMinutes(1);

    private readonly ConcurrentDictionary<string, TopicTarget> _topics = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, bool> _orderedSubscriptions = new(StringComparer.Ordinal);
    private volatile string? _arnPrefix;
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
            // Ordered subscriptions are SQS FIFO queues of SNS FIFO topics, the ordering key the message group.
            OrderingKeys = true,
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

    /// <summary>
    /// Creates the topics and the subscriptions' queues. A topic with an ordered subscription here, or listed in
    /// <see cref="SnsSqsTransportOptions.FifoTopics"/>, is created as a FIFO topic; start-up fails when the standard topic of
    /// the same name exists with subscriptions (they would stop receiving its events). Any other topic is the FIFO topic
    /// when one exists, else the standard topic, created if missing.
    /// </summary>
    /// <exception cref="InvalidOperationException">A topic must be FIFO but exists as a standard topic with subscriptions.</exception>
    public async Task ProvisionAsync(MessagingTopology topology, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(topology);
        var reasons = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var topic in Options.FifoTopics)
        {
            reasons.TryAdd(topic, $"it is listed in Messaging:{TransportName}:FifoTopics");
        }
        foreach (var subscription in topology.Subscriptions.Where(s => s.Ordered))
        {
            reasons.TryAdd(subscription.Topic, $"subscription '{subscription.Name}' is ordered (Messaging:Subscriptions:{subscription.Name}:Ordered)");
        }
        var targets = new Dictionary<string, TopicTarget>(StringComparer.Ordinal);
        foreach (var topic in topology.Topics.Concat(topology.Subscriptions.Select(s => s.Topic)).Distinct(StringComparer.Ordinal))
        {
            targets[topic] = await EnsureTopicAsync(topic, reasons.GetValueOrDefault(topic), cancellationToken).ConfigureAwait(false);
        }
        foreach (var subscription in topology.Subscriptions)
        {
            await ProvisionSubscriptionAsync(subscription, targets[subscription.Topic], cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>An SNS topic the transport publishes to: its ARN, whether it is FIFO, and when that was found out.</summary>
    private sealed record TopicTarget(string Arn, bool Fifo, long ResolvedAt);

    private void Remember(string arn) => _arnPrefix ??= arn[..(arn.LastIndexOf(':') + 1)];

    private async Task<TopicTarget> EnsureTopicAsync(string topic, string? fifoReason, CancellationToken cancellationToken)
    {
        if (fifoReason is not null)
        {
            var fifoArn = await Clients.Sns.CreateFifoTopicAsync(SnsSqsNames.FifoTopic(topic), cancellationToken).ConfigureAwait(false);
            Remember(fifoArn);
            var standardName = SnsSqsNames.Topic(topic);
            var standard = await Clients.Sns.GetTopicAttributesAsync(_arnPrefix + standardName, cancellationToken).ConfigureAwait(false);
            if (standard is not null && SubscriptionCount(standard) > 0)
            {
                throw new InvalidOperationException(
                    $"Topic '{topic}' must be the SNS FIFO topic '{SnsSqsNames.FifoTopic(topic)}' because {fifoReason}, but the standard SNS topic '{standardName}' " +
                    $"exists with {SubscriptionCount(standard)} subscription(s), which would stop receiving the topic's events (publishers use the FIFO topic once it exists). " +
                    $"Turn ordering off for the topic, or move its subscriptions to the FIFO topic and delete the standard topic '{standardName}'.");
            }
            var fifo = new TopicTarget(fifoArn, Fifo: true, Environment.TickCount64);
            _topics[topic] = fifo;
            return fifo;
        }
        if (await FindFifoTopicAsync(topic, cancellationToken).ConfigureAwait(false) is { } existing)
        {
            return existing;
        }
        var arn = await Clients.Sns.CreateTopicAsync(SnsSqsNames.Topic(topic), cancellationToken).ConfigureAwait(false);
        Remember(arn);
        // Not remembered for publishing: an ordered subscription may still create the FIFO topic before the first publish.
        return new TopicTarget(arn, Fifo: false, Environment.TickCount64);
    }

    private static int SubscriptionCount(IReadOnlyDictionary<string, string> attributes) =>
        new[] { "SubscriptionsConfirmed", "SubscriptionsPending" }.Sum(name =>
            attributes.TryGetValue(name, out var value) && int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var count) ? count : 0);

    /// <summary>The topic's FIFO topic when it exists (remembered for good: a FIFO topic stays FIFO), else null.</summary>
    private async Task<TopicTarget?> FindFifoTopicAsync(string topic, CancellationToken cancellationToken)
    {
        var name = SnsSqsNames.FifoTopic(topic);
        var prefix = KnownArnPrefix();
        string? arn;
        if (prefix is not null)
        {
            arn = await Clients.Sns.GetTopicAttributesAsync(prefix + name, cancellationToken).ConfigureAwait(false) is null ? null : prefix + name;
        }
        else
        {
            arn = await Clients.Sns.FindTopicArnAsync(name, cancellationToken).ConfigureAwait(false);
        }
        if (arn is null)
        {
            return null;
        }
        Remember(arn);
        var target = new TopicTarget(arn, Fifo: true, Environment.TickCount64);
        _topics[topic] = target;
        return target;
    }

    private string? KnownArnPrefix() => Options.AccountId is { Length: > 0 } account
        ? $"arn:{Partition(Clients.Region)}:sns:{Clients.Region}:{account}:"
        : _arnPrefix;

    private async Task ProvisionSubscriptionAsync(SubscriptionDefinition subscription, TopicTarget topic, CancellationToken cancellationToken)
    {
        var topicArn = topic.Arn;
        var ordered = subscription.Ordered;
        _orderedSubscriptions[subscription.Name] = ordered;
        var deadLetterUrl = await EnsureQueueAsync(SnsSqsNames.DeadLetterQueue(subscription.Name, ordered), ordered, cancellationToken).ConfigureAwait(false);
        await Clients.Sqs.SetQueueAttributesAsync(deadLetterUrl, new Dictionary<string, string>
        {
            ["MessageRetentionPeriod"] = DeadLetterRetentionSeconds.ToString(CultureInfo.InvariantCulture),
        }, cancellationToken).ConfigureAwait(false);
        var deadLetterArn = await QueueArnAsync(deadLetterUrl, cancellationToken).ConfigureAwait(false);

        var queueUrl = await EnsureQueueAsync(SnsSqsNames.Queue(subscription.Name, ordered), ordered, cancellationToken).ConfigureAwait(false);
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

    private async Task<string> EnsureQueueAsync(string queueName, bool fifo, CancellationToken cancellationToken)
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
        // FIFO queues: explicit deduplication ids (SNS passes the event id on), deduplication per queue.
        var created = await Clients.Sqs.CreateQueueAsync(new CreateQueueRequest
        {
            QueueName = queueName,
            Attributes = fifo ? new Dictionary<string, string> { ["FifoQueue"] = "true", ["ContentBasedDeduplication"] = "false" } : null,
        }, cancellationToken).ConfigureAwait(false);
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
    /// calls at once up to <see cref="SnsSqsTransportOptions.MaxConcurrentPublishes"/> (one after another on a FIFO topic,
    /// which keeps the order of a call's events), and completes once SNS has accepted every one. Publishing never creates a
    /// topic. On a FIFO topic each event's message group is its <c>partitionkey</c> (its id when it has none, so that it is
    /// ordered with nothing) and its deduplication id is its id, both mapped by <see cref="SnsSqsNames.FifoId"/>.
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
        var target = await TopicAsync(topic, cancellationToken).ConfigureAwait(false);
        var topicArn = target.Arn;
        try
        {
            if (messages.Length == 1)
            {
                await Clients.Sns.PublishAsync(topicArn, ToSns(messages[0], target.Fifo ? events[0] : null), cancellationToken).ConfigureAwait(false);
                return;
            }
            var batches = Batch(messages, target.Fifo ? events : null);
            await Parallel.ForEachAsync(batches, new ParallelOptions
            {
                MaxDegreeOfParallelism = target.Fifo ? 1 : Options.MaxConcurrentPublishes,
                CancellationToken = cancellationToken,
            }, (batch, ct) => new ValueTask(PublishBatchAsync(topicArn, batch, ct))).ConfigureAwait(false);
        }
        catch (SnsException ex) when (ex.ErrorCode == "NotFound")
        {
            _topics.TryRemove(topic, out _);
            throw new InvalidOperationException(
                $"SNS topic '{topicArn[(topicArn.LastIndexOf(':') + 1)..]}' ({topicArn}) does not exist at {Clients.SnsEndpoint}. Provision the topology (Messaging:Provisioning) or create the topic.", ex);
        }
    }

    /// <summary>PublishBatch takes at most 10 entries and 256 KiB in total.</summary>
    internal static List<List<SqsWireMessage>> Batch(IReadOnlyList<SqsWireMessage> messages) =>
        BatchIndices(messages).Select(batch => batch.Select(i => messages[i]).ToList()).ToList();

    /// <summary>The SNS messages in batches; with <paramref name="fifoEvents"/> (a FIFO topic) each with its group and deduplication ids.</summary>
    private static List<List<SnsMessage>> Batch(IReadOnlyList<SqsWireMessage> messages, IReadOnlyList<CloudEvent>? fifoEvents) =>
        BatchIndices(messages).Select(batch => batch.Select(i => ToSns(messages[i], fifoEvents?[i])).ToList()).ToList();

    private static List<List<int>> BatchIndices(IReadOnlyList<SqsWireMessage> messages)
    {
        var batches = new List<List<int>>();
        var current = new List<int>();
        var bytes = 0;
        for (var i = 0; i < messages.Count; i++)
        {
            var message = messages[i];
            var size = message.WireSize;
            if (current.Count == 10 || (current.Count > 0 && bytes + size > SnsSqsCodec.MaxWireBytes))
            {
                batches.Add(current);
                current = [];
                bytes = 0;
            }
            current.Add(i);
            bytes += size;
        }
        if (current.Count > 0)
        {
            batches.Add(current);
        }
        return batches;
    }

    private async Task PublishBatchAsync(string topicArn, List<SnsMessage> batch, CancellationToken cancellationToken)
    {
        var pending = batch.Select((m, i) => new SnsBatchEntry(i.ToString(CultureInfo.InvariantCulture), m)).ToList();
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

    /// <summary>The SNS message of an encoded event; with <paramref name="fifoEvent"/>, its FIFO message group and deduplication ids.</summary>
    internal static SnsMessage ToSns(SqsWireMessage message, CloudEvent? fifoEvent = null)
    {
        if (fifoEvent is null)
        {
            return new SnsMessage(message.Body, message.Attributes);
        }
        var id = fifoEvent.Id ?? string.Empty;
        var key = fifoEvent["partitionkey"] as string is { Length: > 0 } partitionKey ? partitionKey : id;
        return new SnsMessage(message.Body, message.Attributes, SnsSqsNames.FifoId(key), SnsSqsNames.FifoId(id));
    }

    /// <summary>
    /// The SNS topic a publish goes to: the FIFO topic <c>{topic}.fifo</c> when the topic is listed in
    /// <see cref="SnsSqsTransportOptions.FifoTopics"/> or that topic exists (remembered for good), else the standard topic
    /// (remembered for <see cref="StandardTopicRecheck"/>, then the FIFO topic is looked for again, so a publisher moves to a
    /// FIFO topic created after it started). ARNs are formed from <see cref="SnsSqsTransportOptions.AccountId"/> or the
    /// account of a topic already seen, else found with ListTopics. Publishing never creates a topic.
    /// </summary>
    private async Task<TopicTarget> TopicAsync(string topic, CancellationToken cancellationToken)
    {
        if (_topics.TryGetValue(topic, out var known)
            && (known.Fifo || Environment.TickCount64 - known.ResolvedAt < (long)StandardTopicRecheck.TotalMilliseconds))
        {
            return known;
        }
        if (Options.FifoTopics.Contains(topic, StringComparer.Ordinal))
        {
            var fifoName = SnsSqsNames.FifoTopic(topic);
            var fifoArn = KnownArnPrefix() is { } knownPrefix
                ? knownPrefix + fifoName
                : await Clients.Sns.FindTopicArnAsync(fifoName, cancellationToken).ConfigureAwait(false)
                    ?? throw new InvalidOperationException(
                        $"SNS FIFO topic '{fifoName}' (topic '{topic}' is listed in Messaging:{TransportName}:FifoTopics) does not exist at {Clients.SnsEndpoint}. Provision the topology (Messaging:Provisioning) or create the topic.");
            Remember(fifoArn);
            var listed = new TopicTarget(fifoArn, Fifo: true, Environment.TickCount64);
            _topics[topic] = listed;
            return listed;
        }
        if (await FindFifoTopicAsync(topic, cancellationToken).ConfigureAwait(false) is { } fifo)
        {
            return fifo;
        }
        var name = SnsSqsNames.Topic(topic);
        string arn;
        if (KnownArnPrefix() is { } prefix)
        {
            arn = prefix + name;
        }
        else
        {
            arn = await Clients.Sns.FindTopicArnAsync(name, cancellationToken).ConfigureAwait(false)
                ?? throw new InvalidOperationException(
                    $"SNS topic '{name}' does not exist at {Clients.SnsEndpoint}. Provision the topology (Messaging:Provisioning) or create the topic.");
            Remember(arn);
        }
        var standard = new TopicTarget(arn, Fifo: false, Environment.TickCount64);
        _topics[topic] = standard;
        return standard;
    }

    private static string Partition(string region) =>
        region.StartsWith("cn-", StringComparison.Ordinal) ? "aws-cn" : region.StartsWith("us-gov-", StringComparison.Ordinal) ? "aws-us-gov" : "aws";

    // ---- consuming -----------------------------------------------------------------------------

    /// <inheritdoc />
    public async Task<ITransportReceiver> StartReceiverAsync(ReceivePipeline pipeline, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        var subscription = pipeline.Subscription;
        var ordered = subscription.Ordered;
        _orderedSubscriptions[subscription.Name] = ordered;
        var queueUrl = await QueueUrlAsync(SnsSqsNames.Queue(subscription.Name, ordered), subscription.Name, cancellationToken).ConfigureAwait(false);
        var deadLetterUrl = await QueueUrlAsync(SnsSqsNames.DeadLetterQueue(subscription.Name, ordered), subscription.Name, cancellationToken).ConfigureAwait(false);
        var receiver = new SqsReceiver(this, pipeline, queueUrl, deadLetterUrl, fifo: ordered);
        _receivers.TryAdd(receiver, 0);
        receiver.Start();
        return receiver;
    }

    internal void Forget(SqsReceiver receiver) => _receivers.TryRemove(receiver, out _);

    /// <summary>
    /// Whether a subscription is ordered (its queues FIFO): as provisioned or consumed by this process; else the subscription
    /// whose standard dead-letter queue does not exist while the FIFO one does (a tool that knows only the name).
    /// </summary>
    internal async Task<bool> IsOrderedAsync(string subscription, CancellationToken cancellationToken)
    {
        if (_orderedSubscriptions.TryGetValue(subscription, out var ordered))
        {
            return ordered;
        }
        if (_queueUrls.ContainsKey(SnsSqsNames.DeadLetterQueue(subscription)))
        {
            return false;
        }
        try
        {
            var standard = await Clients.Sqs.GetQueueUrlAsync(SnsSqsNames.DeadLetterQueue(subscription), cancellationToken).ConfigureAwait(false);
            _queueUrls[SnsSqsNames.DeadLetterQueue(subscription)] = standard.QueueUrl;
            return false;
        }
        catch (QueueDoesNotExistException)
        {
            try
            {
                var fifo = await Clients.Sqs.GetQueueUrlAsync(SnsSqsNames.FifoDeadLetterQueue(subscription), cancellationToken).ConfigureAwait(false);
                _queueUrls[SnsSqsNames.FifoDeadLetterQueue(subscription)] = fifo.QueueUrl;
                return true;
            }
            catch (QueueDoesNotExistException)
            {
                return false; // neither exists: the standard names give the error that names the queue
            }
        }
    }

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
        var queueUrl = await QueueUrlAsync(SnsSqsNames.Queue(subscription.Name, subscription.Ordered), subscription.Name, cancellationToken).ConfigureAwait(false);
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
