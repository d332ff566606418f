using System.Text;

namespace Messaging.LocalAws.Protocol;

/// <summary>A typed message attribute value, as SQS and SNS carry them.</summary>
internal sealed record MessageAttribute(string DataType, string? StringValue, byte[]? BinaryValue)
{
    /// <summary>True for <c>Binary</c> and its custom sub-types (<c>Binary.png</c>).</summary>
    public bool IsBinary => BaseType(DataType) == "Binary";

    /// <summary>Bytes the attribute adds to a message's size: type plus value (the name is counted by the caller).</summary>
    public int ValueSize =>
        Encoding.UTF8.GetByteCount(DataType) + (IsBinary ? BinaryValue?.Length ?? 0 : Encoding.UTF8.GetByteCount(StringValue ?? string.Empty));

    /// <summary>The part of a data type before the first period (<c>Number.int</c> is a <c>Number</c>).</summary>
    public static string BaseType(string dataType)
    {
        var dot = dataType.IndexOf('.', StringComparison.Ordinal);
        return dot < 0 ? dataType : dataType[..dot];
    }
}
