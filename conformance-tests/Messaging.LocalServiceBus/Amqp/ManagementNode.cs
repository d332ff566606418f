using System.Collections;
using Messaging.LocalServiceBus.State;
using Microsoft.Azure.Amqp;
using Microsoft.Azure.Amqp.Encoding;
using Microsoft.Azure.Amqp.Framing;

namespace Messaging.LocalServiceBus.Amqp;

/// <summary>
/// The {entity}/$management node: request maps in, response maps out, with statusCode / statusDescription /
/// errorCondition application properties as Service Bus answers them.
/// </summary>
internal sealed class ManagementNode
{
    readonly ServiceBusNamespace serviceBus;
    readonly SendRefusals refusals;
    readonly string owner;
    readonly MessageStore? store;

    public ManagementNode(ServiceBusNamespace serviceBus, SendRefusals refusals, string owner)
    {
        this.serviceBus = serviceBus;
        this.refusals = refusals;
        this.owner = owner;
        store = serviceBus.ResolveManagementOwner(owner).Store;
    }

    public AmqpMessage Handle(AmqpMessage request)
    {
        var operation = request.ApplicationProperties?.Map["operation"]?.ToString();
        var body = request.ValueBody?.Value as AmqpMap ?? new AmqpMap();
        var now = DateTime.UtcNow;
        try
        {
            return operation switch
            {
                "com.microsoft:renew-lock" => RenewLock(body, now),
                "com.microsoft:schedule-message" => Schedule(body, now),
                "com.microsoft:cancel-scheduled-message" => Cancel(body),
                "com.microsoft:peek-message" => Peek(body),
                "com.microsoft:receive-by-sequence-number" => ReceiveBySequenceNumber(body, now),
                "com.microsoft:update-disposition" => UpdateDisposition(body, now),
                "com.microsoft:renew-session-lock" => OkResponse(new AmqpMap { [new MapKey("expiration")] = serviceBus.RenewSessionLock(Store, SessionId(body), now) }),
                "com.microsoft:get-session-state" => OkResponse(new AmqpMap
                {
                    [new MapKey("session-state")] = serviceBus.GetSessionState(Store, SessionId(body), now) is { } state ? new ArraySegment<byte>(state) : null!,
                }),
                "com.microsoft:set-session-state" => SetSessionState(body, now),
                "com.microsoft:get-message-sessions"
                    => ErrorResponse(501, "amqp:not-implemented", "Listing sessions (get-message-sessions) is not supported by the local Service Bus endpoint."),
                _ => ErrorResponse(501, "amqp:not-implemented", $"The management operation '{operation}' is not supported by the local Service Bus endpoint."),
            };
        }
        catch (ServiceBusErrorException error)
        {
            return ErrorResponse(error.StatusCode, error.Condition, error.Message);
        }
        catch (Exception exception) when (exception is InvalidCastException or InvalidDataException or KeyNotFoundException or FormatException)
        {
            return ErrorResponse(400, "com.microsoft:argument-error", $"Malformed {operation} request: {exception.Message}");
        }
    }

    MessageStore Store => store ?? throw ServiceBusErrorException.BadArgument($"'{owner}' is not an entity that holds messages.");

    AmqpMessage RenewLock(AmqpMap body, DateTime now)
    {
        var tokens = ReadList<Guid>(body, "lock-tokens");
        var expirations = tokens.Select(token => serviceBus.RenewLock(Store, token, now)).ToArray();
        return OkResponse(new AmqpMap { [new MapKey("expirations")] = expirations });
    }

    static string SessionId(AmqpMap body) =>
        body[new MapKey("session-id")]?.ToString() ?? throw new KeyNotFoundException("'session-id' is missing.");

    AmqpMessage SetSessionState(AmqpMap body, DateTime now)
    {
        byte[]? state = body[new MapKey("session-state")] switch
        {
            null => null,
            ArraySegment<byte> segment => segment.ToArray(),
            byte[] array => array,
            _ => throw new InvalidDataException("'session-state' must be binary."),
        };
        serviceBus.SetSessionState(Store, SessionId(body), state, now);
        return OkResponse(new AmqpMap());
    }

    AmqpMessage Schedule(AmqpMap body, DateTime now)
    {
        // Scheduling is a send: throttling refuses it too (503 with the server-busy condition).
        refusals.ThrowIfRefused(owner);
        var entries = ReadList<AmqpMap>(body, "messages");
        var contents = new List<MessageContent>();
        foreach (var entry in entries)
        {
            var bytes = entry[new MapKey("message")] switch
            {
                ArraySegment<byte> segment => segment,
                byte[] array => new ArraySegment<byte>(array),
                _ => throw new InvalidDataException("Each scheduled entry needs the encoded message under 'message'."),
            };
            using var message = AmqpMessage.CreateAmqpStreamMessage(new BufferListStream([bytes]), true);
            contents.Add(MessageContent.FromAmqp(message));
        }

        var numbers = serviceBus.Schedule(owner, contents, now);
        return OkResponse(new AmqpMap { [new MapKey("sequence-numbers")] = numbers });
    }

    AmqpMessage Cancel(AmqpMap body)
    {
        serviceBus.CancelScheduled(owner, ReadList<long>(body, "sequence-numbers"));
        return OkResponse(new AmqpMap());
    }

    AmqpMessage Peek(AmqpMap body)
    {
        long? from = body[new MapKey("from-sequence-number")] is { } value ? Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture) : null;
        int count = Convert.ToInt32(body[new MapKey("message-count")] ?? 1, System.Globalization.CultureInfo.InvariantCulture);
        var messages = serviceBus.Peek(Store, from, count);
        if (messages.Count == 0)
        {
            return ErrorResponse(204, null, "No messages to peek.");
        }

        var list = new List<object>();
        foreach (var message in messages)
        {
            var amqp = message.Content.ToAmqp((uint)message.DeliveryCount, ServiceBusNamespace.BrokerAnnotations(message, null, default), message.TimeToLive);
            list.Add(new AmqpMap { [new MapKey("message")] = Encode(amqp) });
        }

        return OkResponse(new AmqpMap { [new MapKey("messages")] = list });
    }

    AmqpMessage ReceiveBySequenceNumber(AmqpMap body, DateTime now)
    {
        var numbers = ReadList<long>(body, "sequence-numbers");
        var settleMode = body[new MapKey("receiver-settle-mode")] is { } mode ? Convert.ToUInt32(mode, System.Globalization.CultureInfo.InvariantCulture) : 1u;
        bool peekLock = settleMode != 0;
        var deliveries = serviceBus.ReceiveDeferred(Store, numbers, peekLock, now);
        var list = new List<object>();
        foreach (var delivery in deliveries)
        {
            var amqp = delivery.Message.Content.ToAmqp(delivery.PriorDeliveries, ServiceBusNamespace.BrokerAnnotations(delivery.Message, delivery.LockToken, delivery.LockedUntil), delivery.Message.TimeToLive);
            var entry = new AmqpMap { [new MapKey("message")] = Encode(amqp) };
            if (delivery.LockToken is { } token)
            {
                entry[new MapKey("lock-token")] = token;
            }

            list.Add(entry);
        }

        return OkResponse(new AmqpMap { [new MapKey("messages")] = list });
    }

    AmqpMessage UpdateDisposition(AmqpMap body, DateTime now)
    {
        var tokens = ReadList<Guid>(body, "lock-tokens");
        var status = body[new MapKey("disposition-status")]?.ToString();
        var reason = body[new MapKey("deadletter-reason")]?.ToString();
        var description = body[new MapKey("deadletter-description")]?.ToString();
        List<KeyValuePair<string, object>>? properties = null;
        if (body[new MapKey("properties-to-modify")] is AmqpMap map)
        {
            properties = [.. map.Select(pair => new KeyValuePair<string, object>(pair.Key.Key.ToString()!, pair.Value))];
        }

        foreach (var token in tokens)
        {
            switch (status)
            {
                case "completed":
                    serviceBus.Complete(Store, token, now);
                    break;
                case "abandoned":
                    serviceBus.Abandon(Store, token, properties, now);
                    break;
                case "suspended":
                    serviceBus.DeadLetter(Store, token, reason, description, properties, now);
                    break;
                case "defered" or "deferred":
                    serviceBus.Defer(Store, token, properties, now);
                    break;
                default:
                    throw ServiceBusErrorException.BadArgument($"Disposition status '{status}' is not one of completed, abandoned, suspended, defered.");
            }
        }

        return OkResponse(new AmqpMap());
    }

    static List<T> ReadList<T>(AmqpMap body, string key)
    {
        var value = body[new MapKey(key)] ?? throw new KeyNotFoundException($"'{key}' is missing.");
        if (value is T single)
        {
            return [single];
        }

        return ((IEnumerable)value).Cast<object>().Select(item => item is T typed ? typed : (T)Convert.ChangeType(item, typeof(T), System.Globalization.CultureInfo.InvariantCulture)).ToList();
    }

    static ArraySegment<byte> Encode(AmqpMessage message)
    {
        using (message)
        {
            using var stream = message.ToStream();
            using var buffer = new MemoryStream();
            stream.CopyTo(buffer);
            return new ArraySegment<byte>(buffer.ToArray());
        }
    }

    static AmqpMessage OkResponse(AmqpMap body)
    {
        var message = AmqpMessage.Create(new AmqpValue { Value = body });
        message.ApplicationProperties.Map[new MapKey("statusCode")] = 200;
        message.ApplicationProperties.Map[new MapKey("statusDescription")] = "OK";
        return message;
    }

    public static AmqpMessage ErrorResponse(int status, string? condition, string description)
    {
        var message = AmqpMessage.Create(new AmqpValue { Value = new AmqpMap() });
        message.ApplicationProperties.Map[new MapKey("statusCode")] = status;
        message.ApplicationProperties.Map[new MapKey("statusDescription")] = description;
        if (condition is not null)
        {
            message.ApplicationProperties.Map[new MapKey("errorCondition")] = new AmqpSymbol(condition);
        }

        return message;
    }
}
