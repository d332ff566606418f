using System.Globalization;

namespace Messaging.RabbitMQ;

/// <summary>How topology maps onto RabbitMQ entities.</summary>
internal static class RabbitMqNames
{
    /// <summary>A topic is a durable exchange of the same name: fanout by default, see <see cref="RabbitMqTransportOptions.ExchangeType"/>.</summary>
    public static string Exchange(string topic) => topic;

    /// <summary>A subscription is a durable quorum queue of the same name, bound to its topic's exchange with <c>#</c>.</summary>
    public static string Queue(string subscription) => subscription;

    /// <summary>The dead-letter queue of a subscription.</summary>
    public static string DeadLetterQueue(string subscription) => subscription + ".dead-letter";

    /// <summary>One retry queue per backoff delay: messages wait there for the queue's TTL, then dead-letter back to the subscription.</summary>
    public static string RetryQueue(string subscription, TimeSpan delay) =>
        string.Create(CultureInfo.InvariantCulture, $"{subscription}.retry.{(long)delay.TotalMilliseconds}ms");

    /// <summary>Header counting the attempts made before this copy of the message was published (retries republish).</summary>
    public const string PriorAttemptsHeader = "messaging-prior-attempts";

    /// <summary>Header identifying a dead-lettered copy, for replay.</summary>
    public const string DeadLetterIdHeader = "messaging-deadletter-id";

    /// <summary>The quorum queue's count of earlier deliveries of this copy (returned unacknowledged).</summary>
    public const string DeliveryCountHeader = "x-delivery-count";

    /// <summary>The prefix of CloudEvents attributes in headers, from the AMQP protocol binding.</summary>
    public const string AttributePrefix = "cloudEvents_";
}
