namespace Messaging.Aws.Sns;

/// <summary>
/// The few SNS operations the transport needs. A seam so that the official <c>AWSSDK.SimpleNotificationService</c>
/// client can replace <see cref="SnsQueryClient"/> without touching the transport.
/// </summary>
internal interface ISnsClient : IDisposable
{
    /// <summary>Creates a standard topic, or returns the ARN of the existing one (CreateTopic is idempotent).</summary>
    Task<string> CreateTopicAsync(string name, CancellationToken cancellationToken);

    /// <summary>
    /// Creates a FIFO topic (<c>FifoTopic=true</c>, explicit deduplication ids) or returns the ARN of the existing one; the
    /// name must end with <c>.fifo</c>.
    /// </summary>
    Task<string> CreateFifoTopicAsync(string name, CancellationToken cancellationToken);

    /// <summary>The attributes of a topic (GetTopicAttributes), or <c>null</c> when it does not exist.</summary>
    Task<IReadOnlyDictionary<string, string>?> GetTopicAttributesAsync(string topicArn, CancellationToken cancellationToken);

    /// <summary>Finds the ARN of a topic by name (ListTopics), or <c>null</c> when no such topic exists.</summary>
    Task<string?> FindTopicArnAsync(string name, CancellationToken cancellationToken);

    /// <summary>
    /// Subscribes an SQS queue to a topic; returns the subscription ARN (an existing identical subscription is returned as is).
    /// <paramref name="rawMessageDelivery"/> null sends no subscription attributes.
    /// </summary>
    Task<string> SubscribeQueueAsync(string topicArn, string queueArn, bool? rawMessageDelivery, CancellationToken cancellationToken);

    /// <summary>Sets one attribute of a subscription (e.g. <c>RawMessageDelivery</c>).</summary>
    Task SetSubscriptionAttributeAsync(string subscriptionArn, string attributeName, string attributeValue, CancellationToken cancellationToken);

    /// <summary>Publishes one message; returns the SNS message id.</summary>
    Task<string> PublishAsync(string topicArn, SnsMessage message, CancellationToken cancellationToken);

    /// <summary>Publishes up to 10 messages in one request; returns the entries SNS refused.</summary>
    Task<IReadOnlyList<SnsBatchFailure>> PublishBatchAsync(string topicArn, IReadOnlyList<SnsBatchEntry> entries, CancellationToken cancellationToken);

    Task UnsubscribeAsync(string subscriptionArn, CancellationToken cancellationToken);

    Task DeleteTopicAsync(string topicArn, CancellationToken cancellationToken);
}

/// <summary>
/// A message for SNS: a UTF-8 text body and string message attributes; for a FIFO topic also its message group and
/// deduplication ids.
/// </summary>
internal sealed record SnsMessage(string Body, IReadOnlyList<KeyValuePair<string, string>> Attributes, string? GroupId = null, string? DeduplicationId = null);

/// <summary>One entry of a PublishBatch request; <paramref name="Id"/> is unique within the batch.</summary>
internal sealed record SnsBatchEntry(string Id, SnsMessage Message);

/// <summary>An entry SNS refused. <paramref name="SenderFault"/> false means SNS failed and the entry may be retried.</summary>
internal sealed record SnsBatchFailure(string Id, string Code, string? Message, bool SenderFault);

/// <summary>An error answer from SNS.</summary>
internal sealed class SnsException : Exception
{
    public SnsException(string message, string errorCode, int statusCode, string? requestId, Exception? innerException = null)
        : base(message, innerException)
    {
        ErrorCode = errorCode;
        StatusCode = statusCode;
        RequestId = requestId;
    }

    /// <summary>The AWS error code, e.g. <c>NotFound</c>, <c>InvalidParameter</c>, <c>Throttling</c>.</summary>
    public string ErrorCode { get; }

    /// <summary>The HTTP status code of the answer.</summary>
    public int StatusCode { get; }

    public string? RequestId { get; }

    /// <summary>True for errors worth retrying: throttling and failures on the service's side.</summary>
    public bool IsTransient => StatusCode >= 500 || StatusCode == 429 || ErrorCode is "Throttling" or "ThrottlingException" or "ThrottledException"
        or "RequestLimitExceeded" or "RequestThrottled" or "ServiceUnavailable" or "InternalError" or "InternalFailure" or "KMSThrottling";
}
