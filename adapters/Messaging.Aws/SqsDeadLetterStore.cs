using System.Globalization;
using Amazon.SQS.Model;
using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Envelope;

namespace Messaging.Aws;

/// <summary>
/// Reads and replays a subscription's dead-letter queue. SQS has no peek: messages are received (hidden for
/// <see cref="SnsSqsTransportOptions.DeadLetterReadVisibility"/>) and made visible again at once when they stay. Replay
/// sends a clean copy (no dead-letter metadata) to the subscription's queue, so it starts again at attempt 1, and only
/// then deletes the dead letter. Two readers of the same dead-letter queue at the same moment see disjoint parts of it.
/// </summary>
internal sealed class SqsDeadLetterStore(SnsSqsTransport transport) : IDeadLetterStore
{
    public async Task<IReadOnlyList<DeadLetteredEvent>> PeekAsync(string subscription, int maxCount, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxCount);
        var ordered = await transport.IsOrderedAsync(subscription, cancellationToken).ConfigureAwait(false);
        var url = await transport.QueueUrlAsync(SnsSqsNames.DeadLetterQueue(subscription, ordered), subscription, cancellationToken).ConfigureAwait(false);
        var received = await ReceiveAllAsync(url, maxCount, cancellationToken).ConfigureAwait(false);
        await ReleaseAsync(url, received).ConfigureAwait(false);
        return received.Select(m => ToDeadLettered(m, subscription)).ToList();
    }

    /// <summary>
    /// The dead-letter queue's depth as SQS reports it (ApproximateNumberOfMessages plus NotVisible, the ones a peek or a
    /// replay holds): one call, and no receive, which would count against the messages.
    /// </summary>
    public async Task<DeadLetterCount> CountAsync(string subscription, int maxCount, CancellationToken cancellationToken)
    {
        var ordered = await transport.IsOrderedAsync(subscription, cancellationToken).ConfigureAwait(false);
        var url = await transport.QueueUrlAsync(SnsSqsNames.DeadLetterQueue(subscription, ordered), subscription, cancellationToken).ConfigureAwait(false);
        var response = await transport.Clients.SqsReceive.GetQueueAttributesAsync(url, [VisibleCount, NotVisibleCount], cancellationToken).ConfigureAwait(false);
        long Read(string name) => response.Attributes is { } attributes && attributes.TryGetValue(name, out var value)
            && long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var count) ? count : 0;
        return new DeadLetterCount(Read(VisibleCount) + Read(NotVisibleCount), IsExact: true);
    }

    private const string VisibleCount = "ApproximateNumberOfMessages";
    private const string NotVisibleCount = "ApproximateNumberOfMessagesNotVisible";

    public async Task<int> ReplayAsync(string subscription, Func<DeadLetteredEvent, bool> select, CancellationToken cancellationToken)
    {
        var ordered = await transport.IsOrderedAsync(subscription, cancellationToken).ConfigureAwait(false);
        var queueUrl = await transport.QueueUrlAsync(SnsSqsNames.Queue(subscription, ordered), subscription, cancellationToken).ConfigureAwait(false);
        return await TakeSelectedAsync(subscription, ordered, select, (message, deadLettered, ct) =>
            transport.Clients.Sqs.SendMessageAsync(new SendMessageRequest
            {
                QueueUrl = queueUrl,
                MessageBody = message.Body,
                MessageAttributes = SqsMessageAttributes.Copy(message.MessageAttributes),
                // FIFO queue: back into the event's group (its partitionkey, else its id, as published); the dead letter's
                // message id as deduplication id (the event's own id was used within the last 5 minutes, maybe).
                MessageGroupId = ordered ? SnsSqsNames.FifoId(ReplayGroup(deadLettered.Event) ?? message.MessageId) : null,
                MessageDeduplicationId = ordered ? SnsSqsNames.FifoId(message.MessageId) : null,
            }, ct), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Receives the whole dead-letter queue as a replay does; selected messages are deleted, the others made visible again.</summary>
    public async Task<int> PurgeAsync(string subscription, Func<DeadLetteredEvent, bool> select, CancellationToken cancellationToken)
    {
        var ordered = await transport.IsOrderedAsync(subscription, cancellationToken).ConfigureAwait(false);
        return await TakeSelectedAsync(subscription, ordered, select, static (_, _, _) => Task.CompletedTask, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Receives the whole dead-letter queue; a selected message goes to <paramref name="take"/> and is then deleted, the others
    /// are made visible again at the end (also when something fails on the way).
    /// </summary>
    private async Task<int> TakeSelectedAsync(string subscription, bool ordered, Func<DeadLetteredEvent, bool> select,
        Func<Message, DeadLetteredEvent, CancellationToken, Task> take, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(select);
        var url = await transport.QueueUrlAsync(SnsSqsNames.DeadLetterQueue(subscription, ordered), subscription, cancellationToken).ConfigureAwait(false);
        var received = await ReceiveAllAsync(url, int.MaxValue, cancellationToken).ConfigureAwait(false);
        var kept = new List<Message>();
        var taken = 0;
        try
        {
            foreach (var message in received)
            {
                var deadLettered = ToDeadLettered(message, subscription);
                if (!select(deadLettered))
                {
                    kept.Add(message);
                    continue;
                }
                await take(message, deadLettered, cancellationToken).ConfigureAwait(false);
                await transport.Clients.Sqs.DeleteMessageAsync(url, message.ReceiptHandle, cancellationToken).ConfigureAwait(false);
                taken++;
            }
        }
        catch
        {
            kept.AddRange(received.Skip(taken + kept.Count));
            throw;
        }
        finally
        {
            await ReleaseAsync(url, kept).ConfigureAwait(false);
        }
        return taken;
    }

    /// <summary>Receives until <paramref name="maxCount"/> messages or the queue answers empty (a 1 s long poll, so AWS checks all its servers).</summary>
    private async Task<List<Message>> ReceiveAllAsync(string url, int maxCount, CancellationToken cancellationToken)
    {
        var result = new List<Message>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        // Bounded: a queue that keeps answering with messages stops the loop at 10 000 reads.
        for (var round = 0; round < 1000 && result.Count < maxCount; round++)
        {
            var response = await transport.Clients.Sqs.ReceiveMessageAsync(new ReceiveMessageRequest
            {
                QueueUrl = url,
                MaxNumberOfMessages = Math.Min(10, maxCount - result.Count),
                WaitTimeSeconds = 1,
                VisibilityTimeout = Math.Max(1, SnsSqsTransport.VisibilitySeconds(transport.Options.DeadLetterReadVisibility)),
                MessageAttributeNames = ["All"],
                MessageSystemAttributeNames = ["ApproximateReceiveCount"],
            }, cancellationToken).ConfigureAwait(false);
            if (response.Messages is not { Count: > 0 } messages)
            {
                break;
            }
            foreach (var message in messages)
            {
                if (seen.Add(message.MessageId))
                {
                    result.Add(message);
                }
            }
        }
        return result;
    }

    private async Task ReleaseAsync(string url, List<Message> messages)
    {
        foreach (var chunk in messages.Chunk(10))
        {
            await transport.Clients.Sqs.ChangeMessageVisibilityBatchAsync(new ChangeMessageVisibilityBatchRequest
            {
                QueueUrl = url,
                Entries = chunk.Select((m, i) => new ChangeMessageVisibilityBatchRequestEntry
                {
                    Id = i.ToString(CultureInfo.InvariantCulture),
                    ReceiptHandle = m.ReceiptHandle,
                    VisibilityTimeout = 0,
                }).ToList(),
            }, CancellationToken.None).ConfigureAwait(false);
        }
    }

    private static string? ReplayGroup(CloudEvent? cloudEvent) =>
        cloudEvent?["partitionkey"] as string is { Length: > 0 } key ? key : cloudEvent?.Id;

    private DeadLetteredEvent ToDeadLettered(Message message, string subscription)
    {
        var body = message.Body ?? string.Empty;
        CloudEvent? cloudEvent = null;
        try
        {
            cloudEvent = transport.Codec.Decode(body, SqsMessageAttributes.ToStrings(message.MessageAttributes));
        }
        catch (Exception)
        {
            // Dead-lettered because it is not a CloudEvent, whatever the decoder throws; the raw body is still returned.
        }
        var lookup = SqsMessageAttributes.DecodeMetadata(message.MessageAttributes);
        // Without our metadata the message was moved by the queue's redrive policy: consumers kept crashing on it.
        var moved = lookup(DeadLetterMetadata.PropertyNames.Reason) is null;
        var metadata = DeadLetterMetadata.FromProperties(lookup, subscription, 0, moved ? DeadLetterReason.DeliveryLimitExceeded : DeadLetterReason.Unknown);
        return new DeadLetteredEvent
        {
            DeadLetterId = message.MessageId,
            Event = cloudEvent,
            Body = System.Text.Encoding.UTF8.GetBytes(body),
            Metadata = metadata,
        };
    }
}
