using System.Threading.Channels;
using Messaging.LocalServiceBus.State;
using Microsoft.Azure.Amqp;
using Microsoft.Azure.Amqp.Encoding;
using Microsoft.Azure.Amqp.Framing;

namespace Messaging.LocalServiceBus.Amqp;

/// <summary>
/// A link the SDK receives on. Messages go out only against link credit; in peek-lock mode each delivery is
/// unsettled, tagged with its lock token, and the receiver's outcome decides: accepted = complete,
/// released/modified = abandon (modified with undeliverable-here = defer), rejected = dead-letter. A session receiver
/// link (one that asked for a session with the com.microsoft:session-filter) receives only its session's messages, and
/// only while it holds the session's lock; closing it releases the session.
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

    /// <summary>The session this link holds, for a session receiver.</summary>
    string? SessionId { get; set; }

    public static void Attach(SendingAmqpLink link, ServiceBusNamespace serviceBus, MessageStore store, Action<string>? log)
    {
        if (store.IsSessionful)
        {
            throw ServiceBusErrorException.NotAllowed(
                $"It is not possible for an entity that requires sessions to create a non-sessionful message receiver ('{store.Path}').");
        }

        new ConsumerLink(link, serviceBus, store, log).Start();
    }

    /// <summary>
    /// Accepts a session for a session receiver link: the one named in the filter, or the next available one, waiting for
    /// one up to <paramref name="timeout"/> (the link's com.microsoft:timeout) and failing then with com.microsoft:timeout,
    /// as Service Bus does. The attach answer carries the session id in the session filter and the session lock's expiry
    /// (UTC ticks) in com.microsoft:locked-until-utc, where the SDK reads them.
    /// </summary>
    public static async Task AcceptSessionAsync(SendingAmqpLink link, ServiceBusNamespace serviceBus, MessageStore store, string? requested, TimeSpan timeout, Action<string>? log)
    {
        var consumer = new ConsumerLink(link, serviceBus, store, log);
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var changed = serviceBus.ChangedAsync(store);
            var session = serviceBus.TryLockSession(store, requested, consumer, DateTime.UtcNow);
            if (session is not null)
            {
                consumer.SessionId = session.SessionId;
                var source = (Source)link.Settings.Source;
                source.FilterSet ??= new FilterSet();
                source.FilterSet[new AmqpSymbol(SessionFilterName)] = session.SessionId;
                link.Settings.Properties ??= new Fields();
                link.Settings.Properties[new AmqpSymbol(LockedUntilUtcProperty)] = session.LockedUntil.Ticks;
                consumer.Start();
                return;
            }

            var remaining = deadline - DateTime.UtcNow;
            if (link.State is AmqpObjectState.CloseSent or AmqpObjectState.CloseReceived or AmqpObjectState.End or AmqpObjectState.Faulted)
            {
                throw ServiceBusErrorException.Timeout(store.Path);
            }

            if (remaining <= TimeSpan.Zero)
            {
                throw ServiceBusErrorException.Timeout(store.Path);
            }

            await Task.WhenAny(changed, Task.Delay(remaining < TimeSpan.FromSeconds(1) ? remaining : TimeSpan.FromSeconds(1))).ConfigureAwait(false);
        }
    }

    /// <summary>The source filter a session receiver asks for a session with (null value: the next available one).</summary>
    public const string SessionFilterName = "com.microsoft:session-filter";

    /// <summary>The attach property that tells a session receiver until when its session is locked (UTC ticks).</summary>
    public const string LockedUntilUtcProperty = "com.microsoft:locked-until-utc";

    void Start()
    {
        var consumer = this;
        var link = this.link;
        var serviceBus = this.serviceBus;
        var store = this.store;
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
    // A session receiver's close releases its session, and with it the locks of the session's messages.
    void OnClosed()
    {
        if (Interlocked.Exchange(ref closedOnce, 1) != 0)
        {
            return;
        }

        serviceBus.RemoveConsumer(store, this);
        if (SessionId is not null)
        {
            serviceBus.ReleaseSessions(store, this, DateTime.UtcNow);
        }

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
            var delivery = serviceBus.TryTakeNext(store, peekLock, DateTime.UtcNow, this, SessionId);
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
            var lost = SessionId is { } sessionId ? ServiceBusErrorException.SessionLockLost(sessionId) : ServiceBusErrorException.LockLost();
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
