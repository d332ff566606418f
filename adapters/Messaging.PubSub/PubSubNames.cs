namespace Messaging.PubSub;

/// <summary>
/// How our entity names map to Pub/Sub resources. A topic is a topic; a subscription is a subscription of its topic.
/// Each subscription also owns a dead-letter topic and a subscription of it with the same name
/// (<c>{name}.dead-letter</c>, so dead letters can be read back), and a replay topic with one subscription
/// (<c>{name}.replay</c>) through which replayed events reach only this subscription.
/// </summary>
internal sealed class PubSubNames(string projectId)
{
    public const string ReplaySuffix = ".replay";

    public string ProjectId { get; } = projectId;

    public string Topic(string topic) => $"projects/{ProjectId}/topics/{topic}";

    public string Subscription(string subscription) => $"projects/{ProjectId}/subscriptions/{subscription}";

    public static string DeadLetter(string subscription) => subscription + ".dead-letter";

    public static string Replay(string subscription) => subscription + ReplaySuffix;
}
