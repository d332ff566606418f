using System.Globalization;
using Azure.Messaging.ServiceBus;
using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Envelope;

namespace Messaging.ServiceBus;

/// <summary>
/// Reads and replays a subscription's dead letters, which live in two native dead-letter sub-queues: the Service Bus
/// subscription's and its redelivery queue's (a message is dead-lettered where it was received). Peek uses Service Bus's
/// non-locking peek; replay receives with a lock, sends a clean copy to the redelivery queue (where the subscription's
/// consumers pick it up, starting again at attempt 1) and only then completes the dead letter; unselected dead letters
/// are abandoned back to their sub-queue.
/// </summary>
internal sealed class ServiceBusDeadLetterStore(ServiceBusTransport transport) : IDeadLetterStore
{
    /// <summary>Upper bound of dead letters one replay looks at, so a replay always ends.</summary>
    private const int MaxScanned = 100_000;

    public async Task<IReadOnlyList<DeadLetteredEvent>> PeekAsync(string subscription, int maxCount, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxCount);
        var result = new List<DeadLetteredEvent>();
        foreach (var (code, receiver) in await OpenAsync(subscription, cancellationToken).ConfigureAwait(false))
        {
            await using (receiver.ConfigureAwait(false))
            {
                while (result.Count < maxCount)
                {
                    var batch = await receiver.PeekMessagesAsync(maxCount - result.Count, cancellationToken: cancellationToken).ConfigureAwait(false);
                    if (batch.Count == 0)
                    {
                        break;
                    }
                    result.AddRange(batch.Select(m => ToDeadLettered(m, code, subscription)));
                }
            }
        }
        return result;
    }

    /// <summary>
    /// The administration API's DeadLetterMessageCount of the subscription and of its redelivery queue; where that API is
    /// refused (no Manage rights), a peek of at most <paramref name="maxCount"/> dead letters.
    /// </summary>
    public async Task<DeadLetterCount> CountAsync(string subscription, int maxCount, CancellationToken cancellationToken)
    {
        try
        {
            return new DeadLetterCount(await transport.DeadLetterCountAsync(subscription, cancellationToken).ConfigureAwait(false), IsExact: true);
        }
        catch (UnauthorizedAccessException)
        {
            var peeked = await PeekAsync(subscription, maxCount, cancellationToken).ConfigureAwait(false);
            return new DeadLetterCount(peeked.Count, IsExact: peeked.Count < maxCount);
        }
    }

    public async Task<int> ReplayAsync(string subscription, Func<DeadLetteredEvent, bool> select, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(select);
        var replayed = 0;
        var sender = transport.Sender(ServiceBusNames.RedeliveryQueue(subscription));
        foreach (var (code, receiver) in await OpenAsync(subscription, cancellationToken, ServiceBusReceiveMode.PeekLock).ConfigureAwait(false))
        {
            await using (receiver.ConfigureAwait(false))
            {
                var kept = new List<ServiceBusReceivedMessage>();
                try
                {
                    var scanned = 0;
                    while (scanned < MaxScanned)
                    {
                        var batch = await receiver.ReceiveMessagesAsync(100, TimeSpan.FromSeconds(2), cancellationToken).ConfigureAwait(false);
                        if (batch.Count == 0)
                        {
                            break;
                        }
                        scanned += batch.Count;
                        foreach (var message in batch)
                        {
                            if (!select(ToDeadLettered(message, code, subscription)))
                            {
                                kept.Add(message); // stays locked until the end, so the scan does not see it again
                                continue;
                            }
                            var copy = ServiceBusMessageCopy.Copy(message, static key =>
                                DeadLetterMetadata.IsMetadataProperty(key) || key.StartsWith("messaging-", StringComparison.Ordinal));
                            await sender.SendMessageAsync(copy, cancellationToken).ConfigureAwait(false);
                            await receiver.CompleteMessageAsync(message, cancellationToken).ConfigureAwait(false);
                            replayed++;
                        }
                    }
                }
                finally
                {
                    foreach (var message in kept)
                    {
                        await receiver.AbandonMessageAsync(message, cancellationToken: CancellationToken.None).ConfigureAwait(false);
                    }
                }
            }
        }
        return replayed;
    }

    /// <summary>Receives both dead-letter sub-queues with a lock as a replay does; selected dead letters are completed (removed), the others abandoned back.</summary>
    public async Task<int> PurgeAsync(string subscription, Func<DeadLetteredEvent, bool> select, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(select);
        var purged = 0;
        foreach (var (code, receiver) in await OpenAsync(subscription, cancellationToken, ServiceBusReceiveMode.PeekLock).ConfigureAwait(false))
        {
            await using (receiver.ConfigureAwait(false))
            {
                var kept = new List<ServiceBusReceivedMessage>();
                try
                {
                    var scanned = 0;
                    while (scanned < MaxScanned)
                    {
                        var batch = await receiver.ReceiveMessagesAsync(100, TimeSpan.FromSeconds(2), cancellationToken).ConfigureAwait(false);
                        if (batch.Count == 0)
                        {
                            break;
                        }
                        scanned += batch.Count;
                        foreach (var message in batch)
                        {
                            if (!select(ToDeadLettered(message, code, subscription)))
                            {
                                kept.Add(message); // stays locked until the end, so the scan does not see it again
                                continue;
                            }
                            await receiver.CompleteMessageAsync(message, cancellationToken).ConfigureAwait(false);
                            purged++;
                        }
                    }
                }
                finally
                {
                    foreach (var message in kept)
                    {
                        await receiver.AbandonMessageAsync(message, cancellationToken: CancellationToken.None).ConfigureAwait(false);
                    }
                }
            }
        }
        return purged;
    }

    private async Task<IReadOnlyList<(char Code, ServiceBusReceiver Receiver)>> OpenAsync(string subscription, CancellationToken cancellationToken,
        ServiceBusReceiveMode mode = ServiceBusReceiveMode.PeekLock)
    {
        var topic = await transport.TopicOfAsync(subscription, cancellationToken).ConfigureAwait(false);
        var options = new ServiceBusReceiverOptions { SubQueue = SubQueue.DeadLetter, ReceiveMode = mode, PrefetchCount = 0 };
        return
        [
            ('s', transport.Client.CreateReceiver(ServiceBusNames.Topic(topic), ServiceBusNames.Subscription(subscription), options)),
            ('r', transport.Client.CreateReceiver(ServiceBusNames.RedeliveryQueue(subscription), options)),
        ];
    }

    private DeadLetteredEvent ToDeadLettered(ServiceBusReceivedMessage message, char code, string subscription) =>
        Describe(message, code, subscription, transport.Codec);

    /// <summary>A dead-lettered message as the store reports it: the event (when it is one), the raw body and the uniform metadata.</summary>
    internal static DeadLetteredEvent Describe(ServiceBusReceivedMessage message, char code, string subscription, ServiceBusCloudEventCodec codec)
    {
        var body = message.Body.ToArray();
        CloudEvent? cloudEvent = null;
        try
        {
            cloudEvent = codec.Decode(message);
        }
        catch (Exception ex) when (ex is InvalidCloudEventException or FormatException or ArgumentException or InvalidOperationException)
        {
            // Dead-lettered because it is not a CloudEvent; the raw body is still returned.
        }
        var properties = message.ApplicationProperties;
        string? Lookup(string key) => properties.TryGetValue(key, out var value) ? ServiceBusCloudEventCodec.PropertyValue(value) : null;

        // Messages moved by Service Bus itself carry no metadata of ours; its DeadLetterReason says why.
        var fallbackReason = message.DeadLetterReason switch
        {
            ServiceBusNames.BrokerDeliveryLimitReason => DeadLetterReason.DeliveryLimitExceeded,
            { } named when Enum.TryParse<DeadLetterReason>(named, out var parsed) => parsed,
            _ => DeadLetterReason.Unknown,
        };
        var fallbackAttempts = ServiceBusMessageCopy.PriorAttempts(properties) + message.DeliveryCount;
        var metadata = DeadLetterMetadata.FromProperties(Lookup, subscription, fallbackAttempts, fallbackReason);
        if (metadata.Description is null && message.DeadLetterErrorDescription is { } description)
        {
            metadata = metadata with { Description = description };
        }
        if (metadata.Time == DateTimeOffset.MinValue)
        {
            metadata = metadata with { Time = message.EnqueuedTime };
        }
        return new DeadLetteredEvent
        {
            DeadLetterId = string.Create(CultureInfo.InvariantCulture, $"{code}:{message.SequenceNumber}"),
            Event = cloudEvent,
            Body = body,
            Metadata = metadata,
        };
    }
}
