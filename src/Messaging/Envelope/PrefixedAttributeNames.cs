using System.Collections.Concurrent;

namespace Messaging.Envelope;

/// <summary>
/// A binding's wire names of CloudEvent attributes (<c>ce-id</c>, <c>cloudEvents_id</c>, ...), each made once and reused, for
/// codecs that name every attribute of every event they encode. Bounded: past <see cref="MaxNames"/> distinct names (a
/// producer making up extension names without end), a name is concatenated each time instead of kept.
/// </summary>
/// <param name="prefix">The binding's prefix, e.g. <c>ce-</c>.</param>
public sealed class PrefixedAttributeNames(string prefix)
{
    /// <summary>Most names kept.</summary>
    public const int MaxNames = 512;

    private readonly ConcurrentDictionary<string, string> _names = new(StringComparer.Ordinal);

    /// <summary>The prefix followed by <paramref name="attribute"/>.</summary>
    public string Get(string attribute)
    {
        if (_names.TryGetValue(attribute, out var name))
        {
            return name;
        }
        name = prefix + attribute;
        if (_names.Count < MaxNames)
        {
            _names.TryAdd(attribute, name);
        }
        return name;
    }
}
