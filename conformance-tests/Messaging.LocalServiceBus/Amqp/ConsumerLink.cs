using System.Threading.Channels;
using Messaging.LocalServiceBus.State;
using Microsoft.Azure.Amqp;
using Microsoft.Azure.Amqp.Encoding;
using Microsoft.Azure.Amqp.Framing;

namespace Messaging.LocalServiceBus.Amqp;

/// <summary>
/// A link the SDK receives on. Messages go out only against link credit; in peek-lock mode each delivery is
/// unsettled, tagged with its lock token, and the receiver's outcome decides: accepted = complete,
/// released/modified = abandon (modified with undeliverable-here = defer), rejected = dead-letter.
/// </summary>
internal sealed class ConsumerLink : IStoreConsumer
{
    readonly SendingAmqpLink link;
    readonly ServiceBusNamespace serviceBus;
    readonly MessageStore store;
    readonly Action<string>? log;
    readonly bool peekLock;
    readonly Channel<bool> signals = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });
    readonly CancellationTokenSource closed = new();
    int closedOnce;
    int detached;

    ConsumerLink(SendingAmqpLink link, ServiceBusNamespace serviceBus, MessageStore store, Action<string>? log)
    {
        this.link = link;
        this.serviceBus = serviceBus;
        this.store = store;
        this.log = log;
        peekLock = link.Settings.SettleType != SettleMode.SettleOnSend;
    }

    public static void Attach(SendingAmqpLink link, ServiceBusNamespace serviceBus, MessageStore store, Action<string>? log)
    {
        var consumer = new ConsumerLink(link, serviceBus, store, log);
        link.RegisterCreditListener((_, _, _) => consumer.Signal());
        link.RegisterDispositionListener(consumer.OnDisposition);
        _ = consumer.RunAsync();
        serviceBus.AddConsumer(store, consumer);

        // Registered last: on a link that is already closed this runs at once and must find the consumer to remove.
        link.SafeAddClosed((_, _) => consumer.OnClosed());
    }

    public string Name => link.Name;

    public void Signal() => signals.Writer.TryWrite(true);

    public bool Detach(ServiceBusErrorException error)
    {
        if (Volatile.Read(ref closedOnce) != 0
            || link.State is AmqpObjectState.CloseSent or AmqpObjectState.CloseReceived or AmqpObjectState.End or AmqpObjectState.Faulted
            || Interlocked.Exchange(ref detached, 1) != 0)
        {
            return false;
        }

        link.SafeClose(new AmqpException(new Error { Condition = error.Condition, Description = error.Message }));
        return true;
    }

    // Locks held by this link stay until they expire, as on Service Bus: a closed link does not release its messages.
    // Until then their lock tokens still settle over $management (the SDK does so when the link it received on is gone).
    void OnClosed()
    {
        if (Interlocked.Exchange(ref closedOnce, 1) != 0)
        {
            return;
        }

        serviceBus.RemoveConsumer(store, this);
        signals.Writer.TryComplete();
        closed.Cancel();
    }

    async Task RunAsync()
    {
        try
        {
            while (await signals.Reader.WaitToReadAsync(closed.Token).ConfigureAwait(false))
            {
                signals.Reader.TryRead(out _);
                Pump();
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (Exception exception)
        {
            log?.Invoke($"receiver link '{link.Name}' on '{store.Path}' stopped: {exception}");
            link.SafeClose(exception);
        }
    }

    void Pump()
    {
        // Only this loop sends on the link, so the credit read here is not raced by another sender.
        while (link.State == AmqpObjectState.Opened && link.LinkCredit > 0 && Volatile.Read(ref detached) == 0)
        {
            var delivery = serviceBus.TryTakeNext(store, peekLock, DateTime.UtcNow);
            if (delivery is not { } taken)
            {
                return;
            }

            var message = taken.Message.Content.ToAmqp(
                taken.PriorDeliveries,
                ServiceBusNamespace.BrokerAnnotations(taken.Message, taken.LockToken, taken.LockedUntil),
                taken.Message.TimeToLive);
            var tag = (taken.LockToken ?? Guid.NewGuid()).ToByteArray();
            link.SendMessageNoWait(message, new ArraySegment<byte>(tag), default);
        }
    }

    void OnDisposition(Microsoft.Azure.Amqp.Delivery delivery)
    {
        var state = delivery.State;
        if (state is null || state.DescriptorCode == Received.Code)
        {
            return;
        }

        // Once the broker has detached the link its locks are lost: a settlement still arriving on it (sent before the
        // client saw the detach) changes nothing, and the message comes back when the lock expires.
        if (Volatile.Read(ref detached) != 0)
        {
            var lost = ServiceBusErrorException.LockLost();
            Settle(delivery, new Rejected { Error = new Error { Condition = lost.Condition, Description = lost.Message } });
            return;
        }

        var tag = delivery.DeliveryTag;
        if (!peekLock || tag.Count != 16)
        {
            Settle(delivery, state);
            return;
        }

        var lockToken = new Guid(tag.AsSpan());
        var now = DateTime.UtcNow;
        try
        {
            switch (state)
            {
                case Accepted:
                    serviceBus.Complete(store, lockToken, now);
                    break;
                case Rejected rejected:
                    var (reason, description, properties) = ReadDeadLetterInfo(rejected.Error);
                    serviceBus.DeadLetter(store, lockToken, reason, description, properties, now);
                    break;
                case Modified modified when modified.UndeliverableHere == true:
                    serviceBus.Defer(store, lockToken, ToProperties(modified.MessageAnnotations), now);
                    break;
                case Modified modified:
                    serviceBus.Abandon(store, lockToken, ToProperties(modified.MessageAnnotations), now);
                    break;
                case Released:
                    serviceBus.Abandon(store, lockToken, null, now);
                    break;
                default:
                    throw ServiceBusErrorException.BadArgument($"Outcome {state.DescriptorName} is not supported.");
            }

            // The SDK treats a rejected outcome that carries an error as a failed settlement, so a successful
            // dead-letter is confirmed with a plain rejected outcome.
            Settle(delivery, state is Rejected ? new Rejected() : state);
        }
        catch (ServiceBusErrorException error)
        {
            Settle(delivery, new Rejected { Error = new Error { Condition = error.Condition, Description = error.Message } });
        }
    }

    void Settle(Microsoft.Azure.Amqp.Delivery delivery, DeliveryState outcome)
    {
        if (!delivery.Settled)
        {
            link.DisposeDelivery(delivery, true, outcome);
        }
    }

    // The SDK rejects with condition com.microsoft:dead-letter; any rejection dead-letters, the info map only adds metadata.
    static (string? Reason, string? Description, List<KeyValuePair<string, object>>? Properties) ReadDeadLetterInfo(Error? error)
    {
        if (error?.Info is null)
        {
            return (null, null, null);
        }

        string? reason = null;
        string? description = null;
        var properties = new List<KeyValuePair<string, object>>();
        foreach (var pair in ToProperties(error.Info) ?? [])
        {
            switch (pair.Key)
            {
                case ServiceBusNamespace.DeadLetterReasonProperty:
                    reason = pair.Value?.ToString();
                    break;
                case ServiceBusNamespace.DeadLetterErrorDescriptionProperty:
                    description = pair.Value?.ToString();
                    break;
                default:
                    properties.Add(pair);
                    break;
            }
        }

        return (reason, description, properties);
    }

    static List<KeyValuePair<string, object>>? ToProperties(Fields? fields)
    {
        if (fields is null)
        {
            return null;
        }

        var list = new List<KeyValuePair<string, object>>();
        foreach (KeyValuePair<MapKey, object> pair in fields)
        {
            var name = pair.Key.Key switch
            {
                AmqpSymbol symbol => symbol.Value,
                _ => pair.Key.Key?.ToString(),
            };
            if (name is not null)
            {
                list.Add(new(name, pair.Value));
            }
        }

        return list;
    }
}
