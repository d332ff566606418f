using Microsoft.Azure.Amqp;
using Microsoft.Azure.Amqp.Encoding;
using Microsoft.Azure.Amqp.Framing;

namespace Messaging.LocalServiceBus.State;

/// <summary>
/// What a sender put into a message, detached from the AMQP delivery it arrived on, so every entity copy
/// (fan-out, dead-letter, redelivery) can be turned into a fresh AMQP message with broker annotations added.
/// </summary>
internal sealed class MessageContent
{
    public bool? Durable { get; init; }
    public byte? Priority { get; init; }
    public uint? HeaderTtl { get; init; }

    public required PropertiesSnapshot Properties { get; init; }

    /// <summary>Message annotations set by the sender (x-opt-scheduled-enqueue-time, x-opt-partition-key, ...).</summary>
    public required List<KeyValuePair<MapKey, object>> Annotations { get; init; }

    public required List<KeyValuePair<MapKey, object>> ApplicationProperties { get; init; }

    public required SectionFlag BodyType { get; init; }
    public List<byte[]>? DataBody { get; init; }
    public object? ValueBody { get; init; }
    public List<IList<object>>? SequenceBody { get; init; }

    public static MessageContent FromAmqp(AmqpMessage message)
    {
        var sections = message.Sections;
        var header = (sections & SectionFlag.Header) != 0 ? message.Header : null;
        var bodyType = message.BodyType;
        List<byte[]>? data = null;
        object? value = null;
        List<IList<object>>? sequence = null;
        if ((bodyType & SectionFlag.Data) != 0)
        {
            data = [];
            foreach (var section in message.DataBody)
            {
                data.Add(section.Value switch
                {
                    ArraySegment<byte> segment => segment.ToArray(),
                    byte[] bytes => bytes,
                    _ => throw new InvalidDataException("A data section must hold binary."),
                });
            }
        }
        else if ((bodyType & SectionFlag.AmqpValue) != 0)
        {
            value = Detach(message.ValueBody.Value);
        }
        else if ((bodyType & SectionFlag.AmqpSequence) != 0)
        {
            sequence = [];
            foreach (var section in message.SequenceBody)
            {
                sequence.Add([.. section.List.Cast<object>().Select(item => Detach(item)!)]);
            }
        }

        return new MessageContent
        {
            Durable = header?.Durable,
            Priority = header?.Priority,
            HeaderTtl = header?.Ttl,
            Properties = (sections & SectionFlag.Properties) != 0 ? PropertiesSnapshot.From(message.Properties) : new PropertiesSnapshot(),
            Annotations = (sections & SectionFlag.MessageAnnotations) != 0 ? [.. message.MessageAnnotations.Map.Select(DetachPair)] : [],
            ApplicationProperties = (sections & SectionFlag.ApplicationProperties) != 0 ? [.. message.ApplicationProperties.Map.Select(DetachPair)] : [],
            BodyType = bodyType,
            DataBody = data,
            ValueBody = value,
            SequenceBody = sequence,
        };
    }

    static KeyValuePair<MapKey, object> DetachPair(KeyValuePair<MapKey, object> pair) => new(pair.Key, Detach(pair.Value)!);

    /// <summary>Binary values decode as views into the transfer buffer, which is reused once the delivery is disposed.</summary>
    static object? Detach(object? value) => value switch
    {
        ArraySegment<byte> segment => new ArraySegment<byte>(segment.ToArray()),
        AmqpMap map => DetachMap(map),
        System.Collections.IList list and not Array => list.Cast<object>().Select(Detach).ToList(),
        _ => value,
    };

    static AmqpMap DetachMap(AmqpMap map)
    {
        var copy = new AmqpMap();
        foreach (var pair in map)
        {
            copy[pair.Key] = Detach(pair.Value)!;
        }

        return copy;
    }

    public object? GetAnnotation(string key)
    {
        foreach (var pair in Annotations)
        {
            if (KeyEquals(pair.Key, key))
            {
                return pair.Value;
            }
        }

        return null;
    }

    public MessageContent WithoutAnnotation(string key) => With(Annotations.Where(pair => !KeyEquals(pair.Key, key)).ToList(), ApplicationProperties);

    /// <summary>Copy with application properties replaced/added, as Service Bus applies "properties to modify".</summary>
    public MessageContent WithApplicationProperties(IEnumerable<KeyValuePair<string, object>> changes)
    {
        var properties = new List<KeyValuePair<MapKey, object>>(ApplicationProperties);
        foreach (var change in changes)
        {
            properties.RemoveAll(pair => KeyEquals(pair.Key, change.Key));
            properties.Add(new KeyValuePair<MapKey, object>(new MapKey(change.Key), change.Value));
        }

        return With(Annotations, properties);
    }

    MessageContent With(List<KeyValuePair<MapKey, object>> annotations, List<KeyValuePair<MapKey, object>> applicationProperties) => new()
    {
        Durable = Durable,
        Priority = Priority,
        HeaderTtl = HeaderTtl,
        Properties = Properties,
        Annotations = annotations,
        ApplicationProperties = applicationProperties,
        BodyType = BodyType,
        DataBody = DataBody,
        ValueBody = ValueBody,
        SequenceBody = SequenceBody,
    };

    public static bool KeyEquals(MapKey key, string name) => key.Key switch
    {
        AmqpSymbol symbol => string.Equals(symbol.Value, name, StringComparison.Ordinal),
        string text => string.Equals(text, name, StringComparison.Ordinal),
        _ => false,
    };

    /// <summary>Builds a new AMQP message carrying this content plus the header and annotations a broker adds.</summary>
    public AmqpMessage ToAmqp(uint deliveryCount, IEnumerable<KeyValuePair<string, object>> brokerAnnotations, TimeSpan? effectiveTimeToLive = null)
    {
        AmqpMessage message;
        if (DataBody is not null)
        {
            message = AmqpMessage.Create(DataBody.Select(bytes => new Data { Value = new ArraySegment<byte>(bytes) }).ToList());
        }
        else if (SequenceBody is not null)
        {
            message = AmqpMessage.Create(SequenceBody.Select(list => new AmqpSequence((System.Collections.IList)list.ToList())).ToList());
        }
        else if (ValueBody is not null || (BodyType & SectionFlag.AmqpValue) != 0)
        {
            message = AmqpMessage.Create(new AmqpValue { Value = ValueBody });
        }
        else
        {
            message = AmqpMessage.Create();
        }

        message.Header.Durable = Durable;
        message.Header.Priority = Priority;
        message.Header.Ttl = effectiveTimeToLive is { } ttl && ttl.TotalMilliseconds < uint.MaxValue ? (uint)ttl.TotalMilliseconds : HeaderTtl;
        message.Header.DeliveryCount = deliveryCount;
        Properties.ApplyTo(message.Properties);
        if (effectiveTimeToLive is { } effective && message.Properties.CreationTime is { } created && message.Properties.AbsoluteExpiryTime is not null
            && DateTime.MaxValue - created > effective)
        {
            // The SDK derives TimeToLive from absolute-expiry-time minus creation-time when both are present.
            message.Properties.AbsoluteExpiryTime = created + effective;
        }

        foreach (var pair in Annotations)
        {
            message.MessageAnnotations.Map[pair.Key] = pair.Value;
        }

        foreach (var pair in brokerAnnotations)
        {
            message.MessageAnnotations.Map[new MapKey(new AmqpSymbol(pair.Key))] = pair.Value;
        }

        foreach (var pair in ApplicationProperties)
        {
            message.ApplicationProperties.Map[pair.Key] = pair.Value;
        }

        return message;
    }
}

/// <summary>The AMQP properties section, copied field by field so stored copies never share mutable framing objects.</summary>
internal sealed class PropertiesSnapshot
{
    public MessageId? MessageId { get; init; }
    public ArraySegment<byte> UserId { get; init; }
    public string? To { get; init; }
    public string? Subject { get; init; }
    public string? ReplyTo { get; init; }
    public MessageId? CorrelationId { get; init; }
    public string? ContentType { get; init; }
    public string? ContentEncoding { get; init; }
    public DateTime? AbsoluteExpiryTime { get; init; }
    public DateTime? CreationTime { get; init; }
    public string? GroupId { get; init; }
    public uint? GroupSequence { get; init; }
    public string? ReplyToGroupId { get; init; }

    public static PropertiesSnapshot From(Properties properties) => new()
    {
        MessageId = properties.MessageId,
        UserId = properties.UserId.Array is null ? default : new ArraySegment<byte>(properties.UserId.ToArray()),
        To = properties.To?.ToString(),
        Subject = properties.Subject,
        ReplyTo = properties.ReplyTo?.ToString(),
        CorrelationId = properties.CorrelationId,
        ContentType = properties.ContentType.Value,
        ContentEncoding = properties.ContentEncoding.Value,
        AbsoluteExpiryTime = properties.AbsoluteExpiryTime,
        CreationTime = properties.CreationTime,
        GroupId = properties.GroupId,
        GroupSequence = properties.GroupSequence,
        ReplyToGroupId = properties.ReplyToGroupId,
    };

    public string? MessageIdText => MessageId?.ToString();

    public void ApplyTo(Properties properties)
    {
        properties.MessageId = MessageId;
        properties.UserId = UserId;
        properties.To = To;
        properties.Subject = Subject;
        properties.ReplyTo = ReplyTo;
        properties.CorrelationId = CorrelationId;
        properties.ContentType = ContentType;
        properties.ContentEncoding = ContentEncoding;
        properties.AbsoluteExpiryTime = AbsoluteExpiryTime;
        properties.CreationTime = CreationTime;
        properties.GroupId = GroupId;
        properties.GroupSequence = GroupSequence;
        properties.ReplyToGroupId = ReplyToGroupId;
    }
}
