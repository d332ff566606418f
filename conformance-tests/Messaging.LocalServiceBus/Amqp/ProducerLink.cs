using Messaging.LocalServiceBus.State;
using Microsoft.Azure.Amqp;
using Microsoft.Azure.Amqp.Framing;

namespace Messaging.LocalServiceBus.Amqp;

/// <summary>
/// A link the SDK sends on: every message (or every message inside a batch) is enqueued, then accepted; while sends
/// to the target are refused (<see cref="SendRefusals"/>) the transfer is rejected with server-busy and nothing is stored.
/// </summary>
internal static class ProducerLink
{
    // The SDK sends a ServiceBusMessageBatch as one AMQP message of this format whose data sections are encoded messages.
    public const uint BatchMessageFormat = 0x80013700;

    public static void Attach(ReceivingAmqpLink link, ServiceBusNamespace serviceBus, SendRefusals refusals, string target, Action<string>? log)
    {
        link.RegisterMessageListener(message =>
        {
            try
            {
                refusals.ThrowIfRefused(target);
                foreach (var content in Unpack(message))
                {
                    serviceBus.Send(target, content, DateTime.UtcNow);
                }

                link.AcceptMessage(message, message.Batchable);
            }
            catch (ServiceBusErrorException error)
            {
                link.DisposeMessage(message, new Rejected { Error = new Error { Condition = error.Condition, Description = error.Message } }, true, false);
            }
            catch (Exception exception)
            {
                log?.Invoke($"a message sent to '{target}' could not be decoded: {exception}");
                link.DisposeMessage(message, new Rejected { Error = new Error { Condition = AmqpErrorCode.DecodeError, Description = exception.Message } }, true, false);
            }
            finally
            {
                message.Dispose();
            }
        });
    }

    static List<MessageContent> Unpack(AmqpMessage message)
    {
        if (message.MessageFormat != BatchMessageFormat)
        {
            return [MessageContent.FromAmqp(message)];
        }

        var contents = new List<MessageContent>();
        foreach (var section in message.DataBody)
        {
            var bytes = section.Value switch
            {
                ArraySegment<byte> segment => segment,
                byte[] array => new ArraySegment<byte>(array),
                _ => throw new InvalidDataException("A batch data section must hold an encoded message."),
            };
            using var inner = AmqpMessage.CreateAmqpStreamMessage(new BufferListStream([bytes]), true);
            contents.Add(MessageContent.FromAmqp(inner));
        }

        return contents;
    }
}
