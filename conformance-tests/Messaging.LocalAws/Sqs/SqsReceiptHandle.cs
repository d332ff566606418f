using System.Text;

namespace Messaging.LocalAws.Sqs;

/// <summary>
/// Receipt handles: opaque to clients, new on every receive. They carry the queue ARN and the message id
/// so that a handle of another queue, or a malformed one, is told apart from a stale one.
/// </summary>
internal static class SqsReceiptHandle
{
    private const char Separator = '\n';

    public static string Create(string queueArn, string messageId) =>
        Convert.ToBase64String(Encoding.UTF8.GetBytes($"{queueArn}{Separator}{messageId}{Separator}{Guid.NewGuid():N}"));

    public static bool TryParse(string handle, out string queueArn, out string messageId)
    {
        queueArn = messageId = string.Empty;
        var buffer = new byte[handle.Length];
        if (handle.Length == 0 || !Convert.TryFromBase64String(handle, buffer, out var written))
        {
            return false;
        }

        var parts = Encoding.UTF8.GetString(buffer, 0, written).Split(Separator);
        if (parts.Length != 3 || parts[0].Length == 0 || parts[1].Length == 0)
        {
            return false;
        }

        queueArn = parts[0];
        messageId = parts[1];
        return true;
    }
}
