using System.Globalization;

namespace Messaging.LocalAws.Sqs;

/// <summary>The settable attributes of a standard queue, with the documented ranges and defaults.</summary>
internal sealed class SqsQueueSettings
{
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

    public static readonly IReadOnlyList<string> SettableNames =
    [
        "DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod", "Policy", "ReceiveMessageWaitTimeSeconds",
        "RedrivePolicy", "RedriveAllowPolicy", "VisibilityTimeout", "SqsManagedSseEnabled",
    ];

    private static readonly HashSet<string> FifoOnlyNames = new(StringComparer.Ordinal)
    {
        "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit",
    };

    public SqsQueueSettings Clone() => (SqsQueueSettings)MemberwiseClone();

    /// <summary>Validates and applies one attribute. <paramref name="queueExists"/> resolves a dead-letter target ARN.</summary>
    public void Apply(string name, string value, Func<string, bool> queueExists)
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
                if (!queueExists(policy.DeadLetterTargetArn))
                {
                    throw SqsErrors.InvalidParameterValue("RedrivePolicy", value, "Dead letter target does not exist.");
                }

                RedrivePolicy = policy;
                break;
            case "SqsManagedSseEnabled":
                SqsManagedSseEnabled = ParseBoolean(name, value);
                break;
            case "FifoQueue":
                if (ParseBoolean(name, value))
                {
                    throw SqsErrors.InvalidAttributeValue(
                        "FifoQueue=true is not supported: this local endpoint serves standard queues only.");
                }

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
        "FifoQueue" => "false",
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
