using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Envelope;
using Messaging.Transport;
using RabbitMQ.Client;

namespace Messaging.RabbitMQ;

/// <summary>
/// Reads a dead-letter queue with unacknowledged basic.get (closing the channel puts every message back) and
/// replays by publishing a clean copy to the subscription's queue, confirmed, before acknowledging the dead letter.
/// </summary>
internal sealed class RabbitMqDeadLetterStore(RabbitMqTransport transport) : IDeadLetterStore
{
    public async Task<IReadOnlyList<DeadLetteredEvent>> PeekAsync(string subscription, int maxCount, CancellationToken cancellationToken)
    {
        var result = new List<DeadLetteredEvent>();
        var connection = await transport.Connections.ConsumingAsync(cancellationToken).ConfigureAwait(false);
        var channel = await connection.CreateChannelAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        await using (channel.ConfigureAwait(false))
        {
            while (result.Count < maxCount)
            {
                var message = await channel.BasicGetAsync(RabbitMqNames.DeadLetterQueue(subscription), autoAck: false, cancellationToken).ConfigureAwait(false);
                if (message is null)
                {
                    break;
                }
                result.Add(ToDeadLettered(message, subscription));
            }
            await channel.CloseAsync(cancellationToken).ConfigureAwait(false);
        }
        return result;
    }

    /// <summary>The ready messages of the dead-letter queue (a passive declare); those a peek or replay holds right now are not counted.</summary>
    public async Task<DeadLetterCount> CountAsync(string subscription, int maxCount, CancellationToken cancellationToken)
    {
        var connection = await transport.Connections.ConsumingAsync(cancellationToken).ConfigureAwait(false);
        var channel = await connection.CreateChannelAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        await using (channel.ConfigureAwait(false))
        {
            var declared = await channel.QueueDeclarePassiveAsync(RabbitMqNames.DeadLetterQueue(subscription), cancellationToken).ConfigureAwait(false);
            await channel.CloseAsync(cancellationToken).ConfigureAwait(false);
            return new DeadLetterCount(declared.MessageCount, IsExact: true);
        }
    }

    public Task<int> ReplayAsync(string subscription, Func<DeadLetteredEvent, bool> select, CancellationToken cancellationToken) =>
        TakeSelectedAsync(subscription, select, async (message, ct) =>
        {
            var headers = RabbitMqMessageCopy.Headers(message.BasicProperties, []);
            foreach (var key in headers.Keys.Where(k => DeadLetterMetadata.IsMetadataProperty(k) || k.StartsWith("messaging-", StringComparison.Ordinal)).ToList())
            {
                headers.Remove(key);
            }
            await transport.Publisher.PublishAsync(
                [new OutgoingMessage(string.Empty, RabbitMqNames.Queue(subscription), Mandatory: true, RabbitMqMessageCopy.Properties(message.BasicProperties, headers), message.Body.ToArray())],
                ct).ConfigureAwait(false);
        }, cancellationToken);

    /// <summary>Walks the dead-letter queue as a replay does; a selected message is acknowledged (removed), the others go back when the channel closes.</summary>
    public Task<int> PurgeAsync(string subscription, Func<DeadLetteredEvent, bool> select, CancellationToken cancellationToken) =>
        TakeSelectedAsync(subscription, select, static (_, _) => Task.CompletedTask, cancellationToken);

    /// <summary>
    /// Gets every message of the dead-letter queue on one channel; a selected one goes to <paramref name="take"/> and is then
    /// acknowledged (removed); the others stay unacknowledged and return to the queue, in order, when the channel closes.
    /// </summary>
    private async Task<int> TakeSelectedAsync(string subscription, Func<DeadLetteredEvent, bool> select, Func<BasicGetResult, CancellationToken, Task> take, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(select);
        var taken = 0;
        var connection = await transport.Connections.ConsumingAsync(cancellationToken).ConfigureAwait(false);
        var channel = await connection.CreateChannelAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        await using (channel.ConfigureAwait(false))
        {
            while (true)
            {
                var message = await channel.BasicGetAsync(RabbitMqNames.DeadLetterQueue(subscription), autoAck: false, cancellationToken).ConfigureAwait(false);
                if (message is null)
                {
                    break;
                }
                if (!select(ToDeadLettered(message, subscription)))
                {
                    continue; // stays unacknowledged; returned to the dead-letter queue when the channel closes
                }
                await take(message, cancellationToken).ConfigureAwait(false);
                await channel.BasicAckAsync(message.DeliveryTag, multiple: false, cancellationToken).ConfigureAwait(false);
                taken++;
            }
            await channel.CloseAsync(cancellationToken).ConfigureAwait(false);
        }
        return taken;
    }

    private DeadLetteredEvent ToDeadLettered(BasicGetResult message, string subscription)
    {
        var properties = message.BasicProperties;
        var body = message.Body.ToArray();
        CloudEvent? cloudEvent = null;
        try
        {
            cloudEvent = transport.Codec.Decode(properties, body);
        }
        catch (Exception)
        {
            // Dead-lettered because it is not a CloudEvent, whatever the decoder throws; the raw body is still returned.
        }
        var headers = properties.Headers;
        string? Lookup(string key) => headers is not null && headers.TryGetValue(key, out var v) ? RabbitMqCloudEventCodec.HeaderValue(v) : null;

        // Messages moved by the broker's delivery limit carry no metadata of ours; x-death says why.
        var brokerReason = FirstDeathReason(headers);
        var fallbackReason = brokerReason == "delivery_limit" ? DeadLetterReason.DeliveryLimitExceeded : DeadLetterReason.Unknown;
        var metadata = DeadLetterMetadata.FromProperties(Lookup, subscription,
            RabbitMqMessageCopy.Count(headers is not null && headers.TryGetValue(RabbitMqNames.PriorAttemptsHeader, out var prior) ? prior : null) ?? 0, fallbackReason);
        return new DeadLetteredEvent
        {
            DeadLetterId = Lookup(RabbitMqNames.DeadLetterIdHeader) ?? properties.MessageId ?? Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(body)),
            Event = cloudEvent,
            Body = body,
            Metadata = metadata,
        };
    }

    private static string? FirstDeathReason(IDictionary<string, object?>? headers)
    {
        if (headers is null)
        {
            return null;
        }
        if (headers.TryGetValue("x-first-death-reason", out var reason))
        {
            return RabbitMqCloudEventCodec.HeaderValue(reason);
        }
        return null;
    }
}
