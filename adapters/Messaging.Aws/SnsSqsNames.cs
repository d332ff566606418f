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
