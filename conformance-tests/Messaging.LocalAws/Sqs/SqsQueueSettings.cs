using System.Globalization;

namespace Messaging.LocalAws.Sqs;

/// <summary>The settable attributes of a standard or FIFO queue, with the documented ranges and defaults.</summary>
internal sealed class SqsQueueSettings
{
    /// <summary>Settings of a new queue; <paramref name="fifoQueue"/> is fixed at creation.</summary>
    public SqsQueueSettings(bool fifoQueue = false)
    {
        FifoQueue = fifoQueue;
    }

    /// <summary>
    /// The default <c>MaximumMessageSize</c> served here: 256 KiB (262,144 bytes), the long-standing SQS limit and
    /// the SNS limit, so a message accepted by one is accepted by the other. A queue may raise it to 1 MiB.
    /// </summary>
    public const int DefaultMaximumMessageSize = 262_144;
    public const int MaxVisibilityTimeout = 43_200;
    public const int MaxDelaySeconds = 900;
    public const int MaxWaitTimeSeconds = 20;

    public int VisibilityTimeout { get; private set; } = 30;
    public int DelaySeconds { get; private set; }
    public int MaximumMessageSize { get; private set; } = DefaultMaximumMessageSize;
    public int MessageRetentionPeriod { get; private set; } = 345_600;
    public int ReceiveMessageWaitTimeSeconds { get; private set; }
    public string? Policy { get; private set; }
    public RedrivePolicy? RedrivePolicy { get; private set; }
    public string? RedriveAllowPolicy { get; private set; }
    public bool SqsManagedSseEnabled { get; private set; } = true;

    /// <summary>A FIFO queue (name ending <c>.fifo</c>, <c>FifoQueue=true</c> at creation); never changes.</summary>
    public bool FifoQueue { get; }

    /// <summary>FIFO only: the SHA-256 of the body is the deduplication id when a message has none.</summary>
    public bool ContentBasedDeduplication { get; private set; }

    /// <summary>FIFO only: <c>queue</c> (default) or <c>messageGroup</c>, where deduplication ids are compared.</summary>
    public string DeduplicationScope { get; private set; } = "queue";

    /// <summary>FIFO only: <c>perQueue</c> (default) or <c>perMessageGroupId</c> (needs DeduplicationScope messageGroup).</summary>
    public string FifoThroughputLimit { get; private set; } = "perQueue";

    public static readonly IReadOnlyList<string> SettableNames =
    [
        "DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod", "Policy", "ReceiveMessageWaitTimeSeconds",
        "RedrivePolicy", "RedriveAllowPolicy", "VisibilityTimeout", "SqsManagedSseEnabled",
    ];

    /// <summary>Returned by GetQueueAttributes All for FIFO queues only (FifoQueue is returned for every queue).</summary>
    public static readonly IReadOnlyList<string> FifoNames = ["FifoQueue", "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit"];

    private static readonly HashSet<string> FifoOnlyNames = new(StringComparer.Ordinal)
    {
        "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit",
    };

    public SqsQueueSettings Clone() => (SqsQueueSettings)MemberwiseClone();

    /// <summary>
    /// Validates and applies one attribute. <paramref name="queueIsFifo"/> resolves a dead-letter target ARN: null when no
    /// such queue exists, else whether it is a FIFO queue.
    /// </summary>
    public void Apply(string name, string value, Func<string, bool?> queueIsFifo)
    {
        switch (name)
        {
            case "DelaySeconds":
                DelaySeconds = ParseRange(name, value, 0, MaxDelaySeconds);
                break;
            case "MaximumMessageSize":
                MaximumMessageSize = ParseRange(name, value, 1_024, 1_048_576);
                break;
            case "MessageRetentionPeriod":
                MessageRetentionPeriod = ParseRange(name, value, 60, 1_209_600);
                break;
            case "ReceiveMessageWaitTimeSeconds":
                ReceiveMessageWaitTimeSeconds = ParseRange(name, value, 0, MaxWaitTimeSeconds);
                break;
            case "VisibilityTimeout":
                VisibilityTimeout = ParseRange(name, value, 0, MaxVisibilityTimeout);
                break;
            case "Policy":
                // Stored and returned as given; access policies are not evaluated by this endpoint.
                Policy = value.Length == 0 ? null : value;
                break;
            case "RedriveAllowPolicy":
                RedriveAllowPolicy = value.Length == 0 ? null : value;
                break;
            case "RedrivePolicy":
                if (value.Length == 0)
                {
                    RedrivePolicy = null;
                    break;
                }

                var policy = RedrivePolicy.Parse(value);
                if (queueIsFifo(policy.DeadLetterTargetArn) is not { } targetIsFifo)
                {
                    throw SqsErrors.InvalidParameterValue("RedrivePolicy", value, "Dead letter target does not exist.");
                }

                if (targetIsFifo != FifoQueue)
                {
                    throw SqsErrors.InvalidParameterValue("RedrivePolicy", value, "Dead-letter target must be the same type of queue as the source.");
                }

                RedrivePolicy = policy;
                break;
            case "SqsManagedSseEnabled":
                SqsManagedSseEnabled = ParseBoolean(name, value);
                break;
            case "FifoQueue":
                // Decided from the queue name and this attribute before the settings are made (CreateQueue).
                if (ParseBoolean(name, value) != FifoQueue)
                {
                    throw SqsErrors.InvalidParameterValue(
                        "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length.");
                }

                break;
            case "ContentBasedDeduplication" when FifoQueue:
                ContentBasedDeduplication = ParseBoolean(name, value);
                break;
            case "DeduplicationScope" when FifoQueue:
                DeduplicationScope = value is "queue" or "messageGroup"
                    ? value
                    : throw SqsErrors.InvalidAttributeValue($"Invalid value for the parameter DeduplicationScope. Reason: must be 'queue' or 'messageGroup', got '{value}'.");
                break;
            case "FifoThroughputLimit" when FifoQueue:
                FifoThroughputLimit = value is "perQueue" or "perMessageGroupId"
                    ? value
                    : throw SqsErrors.InvalidAttributeValue($"Invalid value for the parameter FifoThroughputLimit. Reason: must be 'perQueue' or 'perMessageGroupId', got '{value}'.");
                break;
            case "KmsMasterKeyId" or "KmsDataKeyReusePeriodSeconds":
                throw SqsErrors.InvalidAttributeName(
                    $"Attribute {name} is not supported: this local endpoint does not implement KMS encryption.");
            default:
                if (FifoOnlyNames.Contains(name))
                {
                    throw SqsErrors.InvalidAttributeName($"You can specify the {name} only when FifoQueue is set to true.");
                }

                throw SqsErrors.InvalidAttributeName($"Unknown Attribute {name}.");
        }
    }

    /// <summary>The attribute as GetQueueAttributes returns it, or null when unset.</summary>
    public string? Get(string name) => name switch
    {
        "DelaySeconds" => Text(DelaySeconds),
        "MaximumMessageSize" => Text(MaximumMessageSize),
        "MessageRetentionPeriod" => Text(MessageRetentionPeriod),
        "ReceiveMessageWaitTimeSeconds" => Text(ReceiveMessageWaitTimeSeconds),
        "VisibilityTimeout" => Text(VisibilityTimeout),
        "Policy" => Policy,
        "RedriveAllowPolicy" => RedriveAllowPolicy,
        "RedrivePolicy" => RedrivePolicy?.ToJson(),
        "SqsManagedSseEnabled" => SqsManagedSseEnabled ? "true" : "false",
        "FifoQueue" => FifoQueue ? "true" : "false",
        "ContentBasedDeduplication" when FifoQueue => ContentBasedDeduplication ? "true" : "false",
        "DeduplicationScope" when FifoQueue => DeduplicationScope,
        "FifoThroughputLimit" when FifoQueue => FifoThroughputLimit,
        _ => null,
    };

    private static string Text(int value) => value.ToString(CultureInfo.InvariantCulture);

    private static int ParseRange(string name, string value, int min, int max)
    {
        if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var parsed) || parsed < min || parsed > max)
        {
            throw SqsErrors.InvalidAttributeValue(
                $"Invalid value for the parameter {name}. Reason: must be an integer from {min} to {max}, got '{value}'.");
        }

        return parsed;
    }

    private static bool ParseBoolean(string name, string value) => value.ToLowerInvariant() switch
    {
        "true" => true,
        "false" => false,
        _ => throw SqsErrors.InvalidAttributeValue($"Invalid value for the parameter {name}. Reason: must be 'true' or 'false'."),
    };
}
