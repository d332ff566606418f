using Microsoft.Azure.Amqp;
using Microsoft.Azure.Amqp.Encoding;
using Microsoft.Azure.Amqp.Framing;

namespace Messaging.LocalServiceBus.Amqp;

/// <summary>
/// The request-response pattern of $cbs and $management: requests arrive on one link, the reply goes out on the
/// link whose target is the request's reply-to, correlated by the request's message-id.
/// </summary>
internal static class RequestResponse
{
    public static void Attach(ReceivingAmqpLink link, ConnectionState connection, Func<AmqpMessage, AmqpMessage> handler)
    {
        link.RegisterMessageListener(request =>
        {
            AmqpMessage response;
            string? replyTo = null;
            MessageId? requestId = null;
            try
            {
                replyTo = request.Properties.ReplyTo?.ToString();
                requestId = request.Properties.MessageId;
                response = handler(request);
                link.AcceptMessage(request, false);
            }
            catch (Exception exception)
            {
                response = ManagementNode.ErrorResponse(500, "com.microsoft:internal-error", exception.Message);
                link.DisposeMessage(request, new Rejected { Error = new Error { Condition = AmqpErrorCode.InternalError, Description = exception.Message } }, true, false);
            }
            finally
            {
                request.Dispose();
            }

            response.Properties.CorrelationId = requestId;
            var replyLink = connection.FindReplyLink(replyTo);
            if (replyLink is null)
            {
                response.Dispose();
                return;
            }

            replyLink.SendMessageNoWait(response, new ArraySegment<byte>(Guid.NewGuid().ToByteArray()), default);
        });
    }
}

