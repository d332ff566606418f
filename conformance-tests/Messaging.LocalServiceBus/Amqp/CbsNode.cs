using Microsoft.Azure.Amqp;
using Microsoft.Azure.Amqp.Encoding;

namespace Messaging.LocalServiceBus.Amqp;

/// <summary>
/// Claims-based security: accepts put-token requests carrying a SAS token signed with the configured key, as the SDK
/// sends before attaching to an entity. A valid token (key name, signature, expiry) grants its audience to the
/// connection; entity links are then checked against the granted audiences. Token expiry does not close links.
/// </summary>
internal sealed class CbsNode(SasTokenValidator validator)
{
    public const string Address = "$cbs";

    public AmqpMessage Handle(AmqpMessage request, ConnectionState connection)
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

        var audience = properties["name"]?.ToString();
        if (string.IsNullOrEmpty(audience))
        {
            return Response(400, "The put-token request names no audience.");
        }

        var failure = validator.Validate(token, DateTimeOffset.UtcNow);
        if (failure is not null)
        {
            return Response(401, failure);
        }

        connection.Authorize(AudiencePath(audience));
        return Response(202, "Accepted");
    }

    // The SDK names the entity URI (sb://host:port/path); a bare path is accepted too.
    static string AudiencePath(string audience) =>
        audience.Contains("://", StringComparison.Ordinal) && Uri.TryCreate(audience, UriKind.Absolute, out var uri)
            ? Uri.UnescapeDataString(uri.AbsolutePath).Trim('/')
            : audience.Trim('/');

    static AmqpMessage Response(int status, string description)
    {
        var message = AmqpMessage.Create();
        message.ApplicationProperties.Map[new MapKey("status-code")] = status;
        message.ApplicationProperties.Map[new MapKey("status-description")] = description;
        return message;
    }
}
