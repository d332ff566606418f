using System.Security.Cryptography;
using System.Text;

namespace Messaging.Aws;

/// <summary>
/// How topology maps onto SNS and SQS names. Our entity names allow letters, digits, '-', '_' and '.', up to 200
/// characters; SNS topic names allow letters, digits, '-' and '_' up to 256 characters, SQS queue names the same up to
/// 80. A name that is already valid is used unchanged. Any other name has every '.' replaced by '_', is cut to fit,
/// and ends with '-' and 8 hex digits of the SHA-256 of the original name, so two different names never share a queue
/// ('a.b' and 'a_b' get different suffixes) and the mapping is the same in every process.
/// </summary>
internal static class SnsSqsNames
{
    private const int MaxTopicLength = 256;
    private const int MaxQueueLength = 80;
    private const string DeadLetterSuffix = "-dead-letter";

    /// <summary>The SNS topic of a topic.</summary>
    public static string Topic(string topic) => Fit(topic, MaxTopicLength);

    /// <summary>The SQS queue of a subscription (subscribed to its topic with raw message delivery).</summary>
    public static string Queue(string subscription) => Fit(subscription, MaxQueueLength);

    /// <summary>The dead-letter queue of a subscription: the queue name, fitted to leave room, plus <c>-dead-letter</c>.</summary>
    public static string DeadLetterQueue(string subscription) => Fit(subscription, MaxQueueLength - DeadLetterSuffix.Length) + DeadLetterSuffix;

    /// <summary>The suffix SNS and SQS require of FIFO topic and queue names.</summary>
    public const string FifoSuffix = ".fifo";

    /// <summary>The FIFO SNS topic of a topic: the name fitted to leave room, plus <c>.fifo</c>.</summary>
    public static string FifoTopic(string topic) => Fit(topic, MaxTopicLength - FifoSuffix.Length) + FifoSuffix;

    /// <summary>The SQS FIFO queue of an ordered subscription: the name fitted to leave room, plus <c>.fifo</c>.</summary>
    public static string FifoQueue(string subscription) => Fit(subscription, MaxQueueLength - FifoSuffix.Length) + FifoSuffix;

    /// <summary>The FIFO dead-letter queue of an ordered subscription (a FIFO queue's dead-letter queue must be FIFO too).</summary>
    public static string FifoDeadLetterQueue(string subscription) =>
        Fit(subscription, MaxQueueLength - DeadLetterSuffix.Length - FifoSuffix.Length) + DeadLetterSuffix + FifoSuffix;

    /// <summary>The subscription's queue: FIFO when the subscription is ordered.</summary>
    public static string Queue(string subscription, bool ordered) => ordered ? FifoQueue(subscription) : Queue(subscription);

    /// <summary>The subscription's dead-letter queue: FIFO when the subscription is ordered.</summary>
    public static string DeadLetterQueue(string subscription, bool ordered) => ordered ? FifoDeadLetterQueue(subscription) : DeadLetterQueue(subscription);

    /// <summary>
    /// A message group or deduplication id: SQS and SNS take 1 to 128 ASCII letters, digits and punctuation. A valid value is
    /// used unchanged; any other (longer, with spaces or non-ASCII characters) becomes <c>sha256-</c> and the 64 hex digits of
    /// the SHA-256 of its UTF-8 bytes, the same in every process, so different values stay apart.
    /// </summary>
    public static string FifoId(string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        if (value.Length is > 0 and <= 128 && value.All(c => c is > ' ' and < (char)127))
        {
            return value;
        }
        return "sha256-" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(value)));
    }

    internal static string Fit(string name, int maxLength)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        var valid = name.Length <= maxLength;
        foreach (var c in name)
        {
            if (!IsAllowed(c))
            {
                valid = false;
                break;
            }
        }
        if (valid)
        {
            return name;
        }
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(name)))[..8];
        var cleaned = new StringBuilder(name.Length);
        foreach (var c in name)
        {
            cleaned.Append(IsAllowed(c) ? c : '_');
        }
        var keep = Math.Min(cleaned.Length, maxLength - hash.Length - 1);
        return string.Concat(cleaned.ToString(0, keep), "-", hash);
    }

    private static bool IsAllowed(char c) => char.IsAsciiLetterOrDigit(c) || c is '-' or '_';
}
