using System.Collections.Concurrent;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using CloudNative.CloudEvents;

namespace Messaging.Envelope;

/// <summary>
/// Maps a CloudEvent to and from a flat set of named string attributes, the shape every binary-mode
/// protocol binding uses (AMQP application properties, RabbitMQ headers, Pub/Sub attributes, ...).
/// Transports add their own name prefix; values use the CloudEvents canonical string encoding.
/// </summary>
public static class CloudEventAttributeMap
{
    /// <summary>Lists every populated attribute except <c>datacontenttype</c>, which bindings carry as a content type.</summary>
    public static IEnumerable<KeyValuePair<string, string>> ToAttributes(CloudEvent cloudEvent)
    {
        ArgumentNullException.ThrowIfNull(cloudEvent);
        yield return new("specversion", cloudEvent.SpecVersion.VersionId);
        foreach (var (attribute, value) in cloudEvent.GetPopulatedAttributes())
        {
            if (attribute.Name == CloudEventsSpecVersion.SpecVersionAttribute.Name
                || attribute == cloudEvent.SpecVersion.DataContentTypeAttribute)
            {
                continue;
            }
            yield return new(attribute.Name, attribute.Format(value));
        }
    }

    /// <summary>
    /// Builds a CloudEvent from attributes read off the wire (names without the binding's prefix). Throws <see cref="InvalidCloudEventException"/>
    /// with a precise description when the attributes do not form a valid CloudEvent.
    /// </summary>
    /// <param name="attributes">The attributes, names without the binding's prefix.</param>
    /// <param name="dataContentType">The content type the binding carried, if any.</param>
    /// <param name="data">The body.</param>
    /// <param name="extensionAttributes">Extension attributes known to the application, for typed values.</param>
    /// <param name="dataIsOwned">
    /// True when <paramref name="data"/> is a buffer the caller hands over and never touches again: when it spans a whole
    /// array, that array becomes the event's data without a copy. By default the data is copied.
    /// </param>
    public static CloudEvent FromAttributes(
        IEnumerable<KeyValuePair<string, string>> attributes,
        string? dataContentType,
        ReadOnlyMemory<byte> data,
        IEnumerable<CloudEventAttribute>? extensionAttributes,
        bool dataIsOwned = false)
    {
        ArgumentNullException.ThrowIfNull(attributes);
        var list = attributes as IReadOnlyCollection<KeyValuePair<string, string>> ?? attributes.ToList();
        string? specVersionId = null;
        foreach (var (name, value) in list)
        {
            if (name == "specversion")
            {
                specVersionId = value;
            }
        }
        if (specVersionId is null)
        {
            throw new InvalidCloudEventException("The message has no 'specversion' attribute, so it is not a CloudEvent.");
        }
        var specVersion = CloudEventsSpecVersion.FromVersionId(specVersionId)
            ?? throw new InvalidCloudEventException($"Unsupported CloudEvents specversion '{specVersionId}'.");

        var cloudEvent = new CloudEvent(specVersion, extensionAttributes);
        foreach (var (name, value) in list)
        {
            if (name == "specversion")
            {
                continue;
            }
            if (!IsValidAttributeName(name))
            {
                // Foreign headers that merely share a prefix are not CloudEvent attributes; ignore them.
                continue;
            }
            try
            {
                if (name == "source")
                {
                    cloudEvent.Source = ParseSource(specVersion, value);
                }
                else
                {
                    cloudEvent.SetAttributeFromString(name, value);
                }
            }
            catch (Exception ex) when (ex is not InvalidCloudEventException)
            {
                throw new InvalidCloudEventException($"Attribute '{name}' has an invalid value '{Truncate(value)}': {ex.Message}", ex);
            }
        }
        if (dataContentType is not null)
        {
            try
            {
                cloudEvent.DataContentType = dataContentType;
            }
            catch (Exception ex)
            {
                throw new InvalidCloudEventException($"The content type '{Truncate(dataContentType)}' is not valid: {ex.Message}", ex);
            }
        }
        // Binary mode cannot tell "no data" from "empty data"; the rule on every transport: an empty body is
        // empty data when a content type is given, and no data otherwise.
        if (data.Length > 0 || dataContentType is not null)
        {
            cloudEvent.Data = dataIsOwned && MemoryMarshal.TryGetArray(data, out var whole) && whole.Offset == 0 && whole.Count == whole.Array!.Length
                ? whole.Array
                : data.ToArray();
        }
        EnsureValid(cloudEvent);
        return cloudEvent;
    }

    /// <summary>
    /// A subscription sees the same few sources on every event, and parsing a URI costs more than the rest of the
    /// attributes together; <see cref="Uri"/> is immutable, so parsed sources are shared (up to a bound).
    /// </summary>
    private static Uri ParseSource(CloudEventsSpecVersion specVersion, string value)
    {
        if (Sources.TryGetValue(value, out var source))
        {
            return source;
        }
        source = (Uri)specVersion.SourceAttribute.Parse(value);
        if (Sources.Count < NameCacheLimit)
        {
            Sources.TryAdd(value, source);
        }
        return source;
    }

    /// <summary>
    /// Builds a CloudEvent from a binary-mode message's properties (headers, application properties): every property whose
    /// name carries one of the <see cref="AcceptedPrefixes"/> is an attribute; a <c>datacontenttype</c> attribute is used
    /// only when the binding carried no content type of its own. Throws <see cref="InvalidCloudEventException"/> with
    /// <paramref name="noAttributesError"/> when no property is a CloudEvents attribute.
    /// </summary>
    /// <param name="properties">The message's properties, with values as the client library gives them.</param>
    /// <param name="valueToString">The canonical string of a property value, or <c>null</c> for a value that is not one.</param>
    /// <param name="contentType">The content type the binding carried, if any.</param>
    /// <param name="data">The body.</param>
    /// <param name="extensionAttributes">Extension attributes known to the application, for typed values.</param>
    /// <param name="noAttributesError">What to say when the message carries no CloudEvents attribute.</param>
    /// <param name="dataIsOwned">As for <see cref="FromAttributes"/>.</param>
    public static CloudEvent FromProperties<TValue>(
        IEnumerable<KeyValuePair<string, TValue>> properties,
        Func<TValue, string?> valueToString,
        string? contentType,
        ReadOnlyMemory<byte> data,
        IEnumerable<CloudEventAttribute>? extensionAttributes,
        string noAttributesError,
        bool dataIsOwned = false)
    {
        ArgumentNullException.ThrowIfNull(properties);
        ArgumentNullException.ThrowIfNull(valueToString);
        var attributes = new List<KeyValuePair<string, string>>();
        foreach (var (key, value) in properties)
        {
            var name = AttributeName(key);
            if (name is null || valueToString(value) is not { } text)
            {
                continue;
            }
            if (name == "datacontenttype")
            {
                contentType ??= text;
                continue;
            }
            attributes.Add(new(name, text));
        }
        if (attributes.Count == 0)
        {
            throw new InvalidCloudEventException(noAttributesError);
        }
        return FromAttributes(attributes, contentType, data, extensionAttributes, dataIsOwned);
    }

    /// <summary>Throws <see cref="InvalidCloudEventException"/> naming the missing required attributes.</summary>
    public static void EnsureValid(CloudEvent cloudEvent)
    {
        ArgumentNullException.ThrowIfNull(cloudEvent);
        // CloudEvent.IsValid allocates a closure and an enumerator on every call; this runs on every publish.
        if (cloudEvent.SpecVersion == CloudEventsSpecVersion.V1_0
            ? cloudEvent.Id is not null && cloudEvent.Source is not null && cloudEvent.Type is not null
            : cloudEvent.IsValid)
        {
            return;
        }
        var missing = cloudEvent.SpecVersion.RequiredAttributes
            .Where(a => cloudEvent[a] is null)
            .Select(a => a.Name);
        throw new InvalidCloudEventException($"The CloudEvent is missing required attribute(s): {string.Join(", ", missing)}.");
    }

    /// <summary>CloudEvents attribute names are lower-case ASCII letters and digits.</summary>
    public static bool IsValidAttributeName(string name)
    {
        if (string.IsNullOrEmpty(name))
        {
            return false;
        }
        foreach (var c in name)
        {
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>
    /// The prefixes binary-mode bindings put before attribute names: <c>cloudEvents_</c> (AMQP 1.0 binding),
    /// <c>cloudEvents:</c> (its older drafts), <c>ce-</c> (HTTP, Google Pub/Sub), <c>ce_</c> (Kafka, AWS message attributes).
    /// </summary>
    public static IReadOnlyList<string> AcceptedPrefixes { get; } = ["cloudEvents_", "cloudEvents:", "ce-", "ce_"];

    // Property names repeat on every message, so the answer is kept; names come from producers we do not control, so
    // the cache stops growing at a bound and the rest is computed each time.
    private const int NameCacheLimit = 512;
    private static readonly ConcurrentDictionary<string, string?> AttributeNames = new(StringComparer.Ordinal);
    private static readonly ConcurrentDictionary<string, Uri> Sources = new(StringComparer.Ordinal);

    /// <summary>
    /// The CloudEvents attribute carried by a binary-mode header, application property or message attribute named
    /// <paramref name="propertyName"/> with any of the <see cref="AcceptedPrefixes"/> (matched case-insensitively; the
    /// attribute name is lower-cased), or <c>null</c> when the property is not a CloudEvents attribute.
    /// </summary>
    public static string? AttributeName(string propertyName)
    {
        ArgumentNullException.ThrowIfNull(propertyName);
        if (AttributeNames.TryGetValue(propertyName, out var name))
        {
            return name;
        }
        name = null;
        foreach (var prefix in AcceptedPrefixes)
        {
            if (propertyName.Length > prefix.Length && propertyName.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
            {
                name = propertyName[prefix.Length..].ToLowerInvariant();
                break;
            }
        }
        if (AttributeNames.Count < NameCacheLimit)
        {
            AttributeNames.TryAdd(propertyName, name);
        }
        return name;
    }

    /// <summary>Decodes a header value written by any AMQP-style client into its string form.</summary>
    public static string? HeaderValueToString(object? value) => value switch
    {
        null => null,
        string s => s,
        byte[] bytes => Encoding.UTF8.GetString(bytes),
        ReadOnlyMemory<byte> memory => Encoding.UTF8.GetString(memory.Span),
        bool b => b ? "true" : "false",
        DateTimeOffset dto => CloudEventAttributeType.Timestamp.Format(dto),
        DateTime dt => CloudEventAttributeType.Timestamp.Format(new DateTimeOffset(DateTime.SpecifyKind(dt, DateTimeKind.Utc))),
        IFormattable formattable => formattable.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString(),
    };

    private static string Truncate(string value) => value.Length <= 64 ? value : value[..64] + "...";
}
