using System.Security.Cryptography;
using System.Text;

namespace Messaging.LocalServiceBus;

/// <summary>
/// Checks a "SharedAccessSignature sr=..&amp;sig=..&amp;se=..&amp;skn=.." token: the key name must be the configured one,
/// the signature the HMAC-SHA256 of "{sr}\n{se}" under the configured key, and the expiry in the future.
/// </summary>
internal sealed class SasTokenValidator(string keyName, string key)
{
    /// <summary>Null when the token is valid, otherwise why it is not.</summary>
    public string? Validate(string? token, DateTimeOffset now)
    {
        const string prefix = "SharedAccessSignature ";
        if (token is null || !token.StartsWith(prefix, StringComparison.Ordinal))
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
}
