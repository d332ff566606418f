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
/// are abandoned back to their sub-queue once the walk's receiver is closed (see <see cref="TakeSelectedAsync"/>).
/// </summary>
internal sealed class ServiceBusDeadLetterStore(ServiceBusTransport transport) : IDeadLetterStore
{
    /// <summary>Upper bound of dead letters one replay looks at, so a replay always ends.</summary>
    private const int MaxScanned = 100_000;

    public async Task<IReadOnlyList<DeadLetteredEvent>> PeekAsync(string subscription, int maxCount, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxCount);
        var result = new List<DeadLetteredEvent>();
        foreach (var (code, open) in await SubQueuesAsync(subscription, cancellationToken).ConfigureAwait(false))
        {
            var receiver = open();
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

    public Task<int> ReplayAsync(string subscription, Func<DeadLetteredEvent, bool> select, CancellationToken cancellationToken)
    {
        var sender = transport.Sender(ServiceBusNames.RedeliveryQueue(subscription));
        return TakeSelectedAsync(subscription, select, async (message, ct) =>
        {
            var copy = ServiceBusMessageCopy.Copy(message, static key =>
                DeadLetterMetadata.IsMetadataProperty(key) || key.StartsWith("messaging-", StringComparison.Ordinal));
            await sender.SendMessageAsync(copy, ct).ConfigureAwait(false);
        }, cancellationToken);
    }

    /// <summary>Walks both dead-letter sub-queues as a replay does; a selected dead letter is completed (removed), the others are given back.</summary>
    public Task<int> PurgeAsync(string subscription, Func<DeadLetteredEvent, bool> select, CancellationToken cancellationToken) =>
        TakeSelectedAsync(subscription, select, static (_, _) => Task.CompletedTask, cancellationToken);

    /// <summary>
    /// Receives every dead letter of both sub-queues with a lock; a selected one goes to <paramref name="take"/> and is then
    /// completed (removed); the others stay locked until the walk of their sub-queue ends, so it does not meet them again,
    /// and are then abandoned back.
    /// </summary>
    /// <remarks>
    /// The walk's receiver ends with link credit outstanding (its last, empty receive asked for a batch that never came,
    /// and a receiver that is not a session's has no way to take that credit back). A message abandoned on that link is
    /// therefore free to go straight back over it; the SDK, with no receive pending, releases it, and round it goes until
    /// the link closes, when the copy on the wire is dropped and stays locked for a whole lock duration: a dead letter the
    /// next walk would not see. So the walk's receiver is closed first, taking its credit with it, and the kept dead
    /// letters are abandoned afterwards with their lock tokens through another receiver, which has no credit (prefetch 0)
    /// and settles them over the entity's management link, as the SDK does for a message whose link is gone.
    /// </remarks>
    private async Task<int> TakeSelectedAsync(string subscription, Func<DeadLetteredEvent, bool> select,
        Func<ServiceBusReceivedMessage, CancellationToken, Task> take, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(select);
        var taken = 0;
        foreach (var (code, open) in await SubQueuesAsync(subscription, cancellationToken).ConfigureAwait(false))
        {
            var kept = new List<ServiceBusReceivedMessage>();
            try
            {
                var receiver = open();
                await using (receiver.ConfigureAwait(false))
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
                                kept.Add(message); // stays locked until the walk ends, so the walk does not meet it again
                                continue;
                            }
                            await take(message, cancellationToken).ConfigureAwait(false);
                            await receiver.CompleteMessageAsync(message, cancellationToken).ConfigureAwait(false);
                            taken++;
                        }
                    }
                }
            }
            finally
            {
                if (kept.Count > 0)
                {
                    await GiveBackAsync(open(), kept).ConfigureAwait(false);
                }
            }
        }
        return taken;
    }

    /// <summary>Abandons dead letters locked by a receiver that is closed now, through <paramref name="settler"/>.</summary>
    private static async Task GiveBackAsync(ServiceBusReceiver settler, List<ServiceBusReceivedMessage> kept)
    {
        await using (settler.ConfigureAwait(false))
        {
            foreach (var message in kept)
            {
                try
                {
                    await settler.AbandonMessageAsync(message, cancellationToken: CancellationToken.None).ConfigureAwait(false);
                }
                catch (ServiceBusException ex) when (ex.Reason == ServiceBusFailureReason.MessageLockLost)
                {
                    // Its lock ran out during a long walk: it is back in its sub-queue already.
                }
            }
        }
    }

    /// <summary>The subscription's dead-letter sub-queue and its redelivery queue's, each with a way to open a peek-lock receiver on it without prefetch.</summary>
    private async Task<IReadOnlyList<(char Code, Func<ServiceBusReceiver> Open)>> SubQueuesAsync(string subscription, CancellationToken cancellationToken)
    {
        var topic = await transport.TopicOfAsync(subscription, cancellationToken).ConfigureAwait(false);
        var options = new ServiceBusReceiverOptions { SubQueue = SubQueue.DeadLetter, ReceiveMode = ServiceBusReceiveMode.PeekLock, PrefetchCount = 0 };
        return
        [
            ('s', () => transport.Client.CreateReceiver(ServiceBusNames.Topic(topic), ServiceBusNames.Subscription(subscription), options)),
            ('r', () => transport.Client.CreateReceiver(ServiceBusNames.RedeliveryQueue(subscription), options)),
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
