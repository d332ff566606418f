using System.Security.Cryptography;
using System.Text;
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

/// <summary>
/// Claims-based security: accepts put-token requests carrying a SAS token signed with the configured key, as the SDK
/// sends before attaching to an entity. Tokens are validated (key name, signature, expiry) but links are not
/// checked against the audiences granted: every connection that authenticated once may reach every entity.
/// </summary>
internal sealed class CbsNode(string keyName, string key)
{
    public const string Address = "$cbs";

    public AmqpMessage Handle(AmqpMessage request)
    {
        var properties = request.ApplicationProperties?.Map;
        var operation = properties?["operation"]?.ToString();
        if (!string.Equals(operation, "put-token", StringComparison.Ordinal))
        {
            return Response(400, $"The $cbs operation '{operation}' is not supported; only put-token is.");
        }

        var type = properties!["type"]?.ToString();
        var token = request.ValueBody?.Value?.ToString();
        if (token is null)
        {
            return Response(400, "The put-token request carries no token.");
        }

        if (!string.Equals(type, "servicebus.windows.net:sastoken", StringComparison.Ordinal))
        {
            return Response(400, $"Token type '{type}' is not supported; only servicebus.windows.net:sastoken is.");
        }

        var failure = Validate(token, DateTimeOffset.UtcNow);
        return failure is null ? Response(202, "Accepted") : Response(401, failure);
    }

    string? Validate(string token, DateTimeOffset now)
    {
        const string prefix = "SharedAccessSignature ";
        if (!token.StartsWith(prefix, StringComparison.Ordinal))
        {
            return "The token is not a SharedAccessSignature.";
        }

        var fields = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var part in token[prefix.Length..].Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            int equals = part.IndexOf('=', StringComparison.Ordinal);
            if (equals > 0)
            {
                fields[part[..equals]] = part[(equals + 1)..];
            }
        }

        if (!fields.TryGetValue("sr", out var resource) || !fields.TryGetValue("sig", out var signature)
            || !fields.TryGetValue("se", out var expiry) || !fields.TryGetValue("skn", out var name))
        {
            return "The SharedAccessSignature lacks one of sr, sig, se, skn.";
        }

        if (!string.Equals(Uri.UnescapeDataString(name), keyName, StringComparison.Ordinal))
        {
            return $"The key name '{Uri.UnescapeDataString(name)}' is not authorized.";
        }

        if (!long.TryParse(expiry, out var expirySeconds) || DateTimeOffset.FromUnixTimeSeconds(expirySeconds) <= now)
        {
            return "The SharedAccessSignature has expired.";
        }

        var expected = HMACSHA256.HashData(Encoding.UTF8.GetBytes(key), Encoding.UTF8.GetBytes(resource + "\n" + expiry));
        byte[] provided;
        try
        {
            provided = Convert.FromBase64String(Uri.UnescapeDataString(signature));
        }
        catch (FormatException)
        {
            return "The signature is not base64.";
        }

        return CryptographicOperations.FixedTimeEquals(expected, provided) ? null : "The signature does not match the shared access key.";
    }

    static AmqpMessage Response(int status, string description)
    {
        var message = AmqpMessage.Create();
        message.ApplicationProperties.Map[new MapKey("status-code")] = status;
        message.ApplicationProperties.Map[new MapKey("status-description")] = description;
        return message;
    }
}
