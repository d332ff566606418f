namespace Messaging.ServiceBus;

/// <summary>How topology maps onto Service Bus entities.</summary>
internal static class ServiceBusNames
{
    /// <summary>Service Bus's limit on subscription names.</summary>
    public const int MaxSubscriptionNameLength = 50;

    /// <summary>The suffix of the queue that carries a subscription's retry copies and replays.</summary>
    public const string RedeliverySuffix = ".redelivery";

    /// <summary>A topic is a Service Bus topic of the same name.</summary>
    public static string Topic(string topic) => topic;

    /// <summary>A subscription is a Service Bus subscription of the same name under its topic.</summary>
    public static string Subscription(string subscription) => subscription;

    /// <summary>
    /// The queue a subscription's consumers also read: retry copies (scheduled for the backoff delay) and dead-letter
    /// replays go there, because Service Bus cannot address one subscription of a topic without filter rules.
    /// </summary>
    public static string RedeliveryQueue(string subscription) => subscription + RedeliverySuffix;

    /// <summary>Application property counting the attempts made before this copy of the message was sent (retries re-send).</summary>
    public const string PriorAttemptsProperty = "messaging-prior-attempts";

    /// <summary>The prefix of CloudEvents attributes in application properties, from the AMQP protocol binding.</summary>
    public const string AttributePrefix = "cloudEvents_";

    /// <summary>The dead-letter reason Service Bus itself records when MaxDeliveryCount is exceeded.</summary>
    public const string BrokerDeliveryLimitReason = "MaxDeliveryCountExceeded";

    /// <summary>Throws when <paramref name="subscription"/> is longer than Service Bus allows.</summary>
    public static void EnsureValidSubscription(string subscription)
    {
        if (subscription.Length > MaxSubscriptionNameLength)
        {
            throw new ArgumentException(
                $"Subscription name '{subscription}' has {subscription.Length} characters; Service Bus allows at most {MaxSubscriptionNameLength}.",
                nameof(subscription));
        }
    }
}
