namespace Messaging.Aws;

/// <summary>Settings of the SNS/SQS transport (<c>Messaging:SnsSqs</c>).</summary>
public sealed class SnsSqsTransportOptions
{
    /// <summary>The AWS region (e.g. <c>eu-west-1</c>). Unset: the SDK's region chain (<c>AWS_REGION</c>, <c>AWS_DEFAULT_REGION</c>, profile, instance metadata).</summary>
    public string? Region { get; set; }

    /// <summary>
    /// One endpoint for both SNS and SQS, for local emulators (LocalStack, the conformance endpoint). Unset: the regional AWS endpoints.
    /// <see cref="SnsServiceUrl"/> and <see cref="SqsServiceUrl"/> override it per service.
    /// </summary>
    public string? ServiceUrl { get; set; }

    /// <summary>SNS endpoint, when it differs from <see cref="ServiceUrl"/> (e.g. ElasticMQ for SQS plus a separate SNS emulator).</summary>
    public string? SnsServiceUrl { get; set; }

    /// <summary>SQS endpoint, when it differs from <see cref="ServiceUrl"/>.</summary>
    public string? SqsServiceUrl { get; set; }

    /// <summary>
    /// Static credentials, meant for local emulators. Unset: the SDK's default credential chain (environment, profile,
    /// web identity, container and instance roles).
    /// </summary>
    public string? AccessKeyId { get; set; }

    /// <summary>Secret of <see cref="AccessKeyId"/>.</summary>
    public string? SecretAccessKey { get; set; }

    /// <summary>Session token of temporary <see cref="AccessKeyId"/> credentials.</summary>
    public string? SessionToken { get; set; }

    /// <summary>
    /// The account that owns the topics, used to form topic ARNs for topics this process did not provision. Unset: taken
    /// from any topic ARN already seen, else looked up with SNS ListTopics.
    /// </summary>
    public string? AccountId { get; set; }

    /// <summary>
    /// Topics that are SNS FIFO topics (<c>{topic}.fifo</c>), besides those with an ordered subscription in this service's
    /// topology and those that already exist as FIFO topics. List a topic here in a publishing service that provisions it
    /// before any ordered subscription does, so that it is created FIFO. A publisher finds existing FIFO topics by itself.
    /// </summary>
    public IList<string> FifoTopics { get; } = new List<string>();

    /// <summary>Long-polling wait of each ReceiveMessage call (0 to 20 seconds).</summary>
    public int WaitTimeSeconds { get; set; } = 20;

    /// <summary>
    /// How long a received message stays invisible to other consumers. It is extended while its handler runs, so it only
    /// bounds how soon a message held by a crashed consumer is delivered again.
    /// </summary>
    public TimeSpan VisibilityTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Receives beyond the subscription's maximum attempts after which SQS's redrive policy moves a message to the
    /// dead-letter queue by itself (<c>maxReceiveCount = MaxAttempts + CrashRedeliveryAllowance</c>). A safety net for
    /// messages whose consumers keep crashing; ordinary failures are dead-lettered explicitly, with metadata, at MaxAttempts.
    /// </summary>
    public int CrashRedeliveryAllowance { get; set; } = 5;

    /// <summary>Most ReceiveMessage calls a consumer keeps in flight at once (each returns up to 10 messages).</summary>
    public int MaxConcurrentReceives { get; set; } = 4;

    /// <summary>Most SNS Publish/PublishBatch requests one publish call keeps in flight.</summary>
    public int MaxConcurrentPublishes { get; set; } = 8;

    /// <summary>
    /// How many times a request failing with a transient error (network, throttling, 5xx) is retried, with exponential
    /// backoff capped at 5 seconds: the default 8 rides out 8 to 16 seconds of unavailability before a publish fails.
    /// </summary>
    public int MaxRetries { get; set; } = 8;

    /// <summary>Timeout of one HTTP request to SNS (long polls to SQS get <see cref="WaitTimeSeconds"/> on top).</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// The largest event accepted: data plus attribute values. Kept below SQS's 256 KiB message limit because binary data
    /// travels base64-encoded (structured mode, 4/3 larger); an event within this limit whose encoding still exceeds
    /// 256 KiB (very large attributes) is refused too.
    /// </summary>
    public int MaxEventSizeBytes { get; set; } = SnsSqsCodec.DefaultMaxEventSizeBytes;

    /// <summary>How long dead-letter messages read for peek or replay stay hidden from other readers before being released.</summary>
    public TimeSpan DeadLetterReadVisibility { get; set; } = TimeSpan.FromSeconds(30);
}
