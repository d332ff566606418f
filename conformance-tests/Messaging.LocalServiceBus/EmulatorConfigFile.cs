using System.Text.Json;
using System.Xml;
using Messaging.LocalServiceBus.State;

namespace Messaging.LocalServiceBus;

/// <summary>
/// Reads the official emulator's Config.json (UserConfig.Namespaces[].Queues / Topics / Subscriptions with
/// Properties, durations in ISO 8601 such as "PT1M") and creates the entities it declares.
/// </summary>
internal static class EmulatorConfigFile
{
    public static void Apply(string json, ServiceBusNamespace serviceBus)
    {
        using var document = JsonDocument.Parse(json);
        if (!document.RootElement.TryGetProperty("UserConfig", out var userConfig)
            || !userConfig.TryGetProperty("Namespaces", out var namespaces)
            || namespaces.ValueKind != JsonValueKind.Array)
        {
            throw new InvalidDataException("The topology file must contain UserConfig.Namespaces[] as in the Service Bus emulator's Config.json.");
        }

        foreach (var ns in namespaces.EnumerateArray())
        {
            foreach (var queue in Array(ns, "Queues"))
            {
                var name = Name(queue, "queue");
                var properties = Properties(queue);
                serviceBus.CreateQueue(name, new LocalQueueOptions
                {
                    LockDuration = Duration(properties, "LockDuration") ?? TimeSpan.FromMinutes(1),
                    MaxDeliveryCount = Int(properties, "MaxDeliveryCount") ?? 10,
                    DefaultMessageTimeToLive = Duration(properties, "DefaultMessageTimeToLive") ?? TimeSpan.MaxValue,
                    DeadLetteringOnMessageExpiration = Bool(properties, "DeadLetteringOnMessageExpiration") ?? false,
                    ForwardDeadLetteredMessagesTo = Text(properties, "ForwardDeadLetteredMessagesTo"),
                    ForwardTo = Text(properties, "ForwardTo"),
                    RequiresSession = Bool(properties, "RequiresSession") ?? false,
                    RequiresDuplicateDetection = Bool(properties, "RequiresDuplicateDetection") ?? false,
                });
            }

            foreach (var topic in Array(ns, "Topics"))
            {
                var topicName = Name(topic, "topic");
                var properties = Properties(topic);
                serviceBus.CreateTopic(topicName, new LocalTopicOptions
                {
                    DefaultMessageTimeToLive = Duration(properties, "DefaultMessageTimeToLive") ?? TimeSpan.MaxValue,
                    RequiresDuplicateDetection = Bool(properties, "RequiresDuplicateDetection") ?? false,
                });
                foreach (var subscription in Array(topic, "Subscriptions"))
                {
                    var name = Name(subscription, "subscription");
                    var rules = Array(subscription, "Rules").ToList();
                    if (rules.Count > 0)
                    {
                        throw ServiceBusErrorException.NotSupported(
                            $"Subscription '{topicName}/{name}' declares rules; the local Service Bus endpoint supports only the default TrueFilter rule (no SQL or correlation filters).");
                    }

                    var subscriptionProperties = Properties(subscription);
                    serviceBus.CreateSubscription(topicName, name, new LocalSubscriptionOptions
                    {
                        LockDuration = Duration(subscriptionProperties, "LockDuration") ?? TimeSpan.FromMinutes(1),
                        MaxDeliveryCount = Int(subscriptionProperties, "MaxDeliveryCount") ?? 10,
                        DefaultMessageTimeToLive = Duration(subscriptionProperties, "DefaultMessageTimeToLive") ?? TimeSpan.MaxValue,
                        DeadLetteringOnMessageExpiration = Bool(subscriptionProperties, "DeadLetteringOnMessageExpiration") ?? false,
                        ForwardDeadLetteredMessagesTo = Text(subscriptionProperties, "ForwardDeadLetteredMessagesTo"),
                        ForwardTo = Text(subscriptionProperties, "ForwardTo"),
                        RequiresSession = Bool(subscriptionProperties, "RequiresSession") ?? false,
                    });
                }
            }
        }
    }

    static IEnumerable<JsonElement> Array(JsonElement element, string name) =>
        element.TryGetProperty(name, out var array) && array.ValueKind == JsonValueKind.Array ? array.EnumerateArray() : [];

    static string Name(JsonElement element, string kind) =>
        element.TryGetProperty("Name", out var name) && name.GetString() is { Length: > 0 } text
            ? text
            : throw new InvalidDataException($"A {kind} in the topology file has no Name.");

    static JsonElement? Properties(JsonElement element) =>
        element.TryGetProperty("Properties", out var properties) && properties.ValueKind == JsonValueKind.Object ? properties : null;

    static string? Text(JsonElement? properties, string name) =>
        properties is { } p && p.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String && value.GetString() is { Length: > 0 } text ? text : null;

    static bool? Bool(JsonElement? properties, string name) =>
        properties is { } p && p.TryGetProperty(name, out var value) && value.ValueKind is JsonValueKind.True or JsonValueKind.False ? value.GetBoolean() : null;

    static int? Int(JsonElement? properties, string name) =>
        properties is { } p && p.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number ? value.GetInt32() : null;

    static TimeSpan? Duration(JsonElement? properties, string name)
    {
        var text = Text(properties, name);
        if (text is null)
        {
            return null;
        }

        try
        {
            return XmlConvert.ToTimeSpan(text);
        }
        catch (FormatException)
        {
            throw new InvalidDataException($"'{name}' = '{text}' is not an ISO 8601 duration such as PT1M.");
        }
    }
}
