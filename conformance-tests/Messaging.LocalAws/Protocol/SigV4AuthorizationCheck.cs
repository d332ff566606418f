using Microsoft.AspNetCore.Http;

namespace Messaging.LocalAws.Protocol;

/// <summary>
/// Checks that a request carries a Signature Version 4 authorization in the documented shape, scoped to
/// the right service and region. The signature itself is not recomputed: the endpoint has no secret
/// keys to verify it against. A client that forgets to sign, or signs for the wrong service, is refused
/// here as it would be by AWS.
/// </summary>
internal static class SigV4AuthorizationCheck
{
    private const string Algorithm = "AWS4-HMAC-SHA256";

    /// <summary>Throws the error AWS answers when the request is not signed in the documented shape.</summary>
    public static void Validate(HttpRequest request, IReadOnlyDictionary<string, string>? queryParameters, string service, string region)
    {
        string? header = request.Headers.Authorization;
        if (string.IsNullOrWhiteSpace(header))
        {
            ValidatePresigned(request, queryParameters, service, region);
            return;
        }

        if (!header.StartsWith(Algorithm + " ", StringComparison.Ordinal))
        {
            throw AwsServiceException.IncompleteSignature(
                $"Authorization header requires the '{Algorithm}' algorithm; other signature versions are not accepted.");
        }

        var parts = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var piece in header[Algorithm.Length..].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            var equals = piece.IndexOf('=', StringComparison.Ordinal);
            if (equals > 0)
            {
                parts[piece[..equals]] = piece[(equals + 1)..];
            }
        }

        foreach (var required in new[] { "Credential", "SignedHeaders", "Signature" })
        {
            if (!parts.TryGetValue(required, out var value) || value.Length == 0)
            {
                throw AwsServiceException.IncompleteSignature(
                    $"Authorization header requires '{required}' parameter. Authorization={header}");
            }
        }

        if (!request.Headers.ContainsKey("X-Amz-Date") && !request.Headers.ContainsKey("Date"))
        {
            throw AwsServiceException.IncompleteSignature(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.");
        }

        var signedHeaders = parts["SignedHeaders"].Split(';');
        if (!signedHeaders.Contains("host", StringComparer.OrdinalIgnoreCase))
        {
            throw AwsServiceException.IncompleteSignature("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");
        }

        if (!IsHex(parts["Signature"]))
        {
            throw AwsServiceException.IncompleteSignature("The request signature must be a hexadecimal string.");
        }

        ValidateCredentialScope(parts["Credential"], service, region);
    }

    private static void ValidatePresigned(HttpRequest request, IReadOnlyDictionary<string, string>? queryParameters, string service, string region)
    {
        string? Parameter(string name)
        {
            if (request.Query.TryGetValue(name, out var fromQuery))
            {
                return fromQuery.ToString();
            }

            return queryParameters is not null && queryParameters.TryGetValue(name, out var fromForm) ? fromForm : null;
        }

        var signature = Parameter("X-Amz-Signature");
        if (signature is null)
        {
            throw AwsServiceException.MissingAuthenticationToken();
        }

        if (Parameter("X-Amz-Algorithm") != Algorithm || Parameter("X-Amz-Credential") is not { } credential
            || Parameter("X-Amz-Date") is null || Parameter("X-Amz-SignedHeaders") is null)
        {
            throw AwsServiceException.IncompleteSignature(
                "AWS query-string parameters must include 'X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Signature', 'X-Amz-SignedHeaders', 'X-Amz-Date'.");
        }

        ValidateCredentialScope(credential, service, region);
    }

    private static void ValidateCredentialScope(string credential, string service, string region)
    {
        // AKID/yyyyMMdd/region/service/aws4_request
        var scope = credential.Split('/');
        if (scope.Length != 5 || scope[0].Length == 0 || scope[1].Length != 8 || !scope[1].All(char.IsAsciiDigit)
            || scope[4] != "aws4_request")
        {
            throw AwsServiceException.IncompleteSignature(
                $"Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{credential}'");
        }

        if (!string.Equals(scope[3], service, StringComparison.Ordinal))
        {
            throw AwsServiceException.SignatureDoesNotMatch($"Credential should be scoped to correct service: '{service}'. ");
        }

        if (!string.Equals(scope[2], region, StringComparison.Ordinal))
        {
            throw AwsServiceException.SignatureDoesNotMatch(
                $"Credential should be scoped to a valid region. This endpoint serves '{region}', the credential is scoped to '{scope[2]}'.");
        }
    }

    private static bool IsHex(string value) => value.Length > 0 && value.All(char.IsAsciiHexDigit);
}
