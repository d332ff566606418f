namespace Messaging.Topology;

/// <summary>Every topic and subscription an application uses; provisioned at start-up.</summary>
public sealed record MessagingTopology(IReadOnlyList<string> Topics, IReadOnlyList<SubscriptionDefinition> Subscriptions);
