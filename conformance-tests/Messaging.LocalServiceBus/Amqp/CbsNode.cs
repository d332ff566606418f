using Microsoft.Azure.Amqp;
using Microsoft.Azure.Amqp.Encoding;

namespace Messaging.LocalServiceBus.Amqp;

/// <summary>
/// Claims-based security: accepts put-token requests carrying a SAS token signed with the configured key, as the SDK
/// sends before attaching to an entity. Tokens are validated (key name, signature, expiry) but links are not
/// checked against the audiences granted: every connection that authenticated once may reach every entity.
/// </summary>
internal sealed class CbsNode(SasTokenValidator validator)
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

        var failure = validator.Validate(token, DateTimeOffset.UtcNow);
        return failure is null ? Response(202, "Accepted") : Response(401, failure);
    }

    static AmqpMessage Response(int status, string description)
    {
        var message = AmqpMessage.Create();
        message.ApplicationProperties.Map[new MapKey("status-code")] = status;
        message.ApplicationProperties.Map[new MapKey("status-description")] = description;
        return message;
    }
}
