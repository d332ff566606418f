using System.Text.Json;
using System.Text.RegularExpressions;

namespace Messaging.LocalAws.Sqs;

/// <summary>
/// Decides whether a queue's access policy lets SNS deliver a topic's messages (<c>sqs:SendMessage</c> by the
/// service principal <c>sns.amazonaws.com</c>), as AWS requires even within one account: without such a
/// statement SNS cannot deliver to the queue. A subset of the IAM policy language is evaluated: Allow/Deny,
/// Principal (<c>*</c>, <c>{"AWS":"*"}</c>, <c>{"Service":"sns.amazonaws.com"}</c>), Action and Resource with
/// <c>*</c>/<c>?</c> wildcards, and conditions ArnEquals/ArnLike/StringEquals/StringLike on
/// <c>aws:SourceArn</c> and <c>aws:SourceAccount</c>. Statements using anything else (NotPrincipal, NotAction,
/// other operators or keys) never match, so they neither allow nor deny.
/// </summary>
internal static class QueuePolicyEvaluator
{
    private const string SnsPrincipal = "sns.amazonaws.com";

    public static bool AllowsTopicDelivery(string? policy, string queueArn, string topicArn, string accountId)
    {
        if (string.IsNullOrWhiteSpace(policy))
        {
            return false;
        }

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(policy);
        }
        catch (JsonException)
        {
            return false;
        }

        using (document)
        {
            if (!document.RootElement.TryGetProperty("Statement", out var statements))
            {
                return false;
            }

            var context = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
            {
                ["aws:SourceArn"] = topicArn,
                ["aws:SourceAccount"] = accountId,
            };
            var allowed = false;
            foreach (var statement in statements.ValueKind == JsonValueKind.Array ? statements.EnumerateArray().ToList() : [statements])
            {
                if (statement.ValueKind != JsonValueKind.Object || !Matches(statement, queueArn, context))
                {
                    continue;
                }

                var effect = statement.TryGetProperty("Effect", out var value) ? value.GetString() : null;
                if (effect == "Deny")
                {
                    return false;
                }

                allowed |= effect == "Allow";
            }

            return allowed;
        }
    }

    private static bool Matches(JsonElement statement, string queueArn, IReadOnlyDictionary<string, string> context)
    {
        if (statement.TryGetProperty("NotPrincipal", out _) || statement.TryGetProperty("NotAction", out _) || statement.TryGetProperty("NotResource", out _))
        {
            return false;
        }

        return statement.TryGetProperty("Principal", out var principal) && PrincipalMatches(principal)
            && statement.TryGetProperty("Action", out var action) && Values(action).Any(pattern => Glob(pattern, "sqs:SendMessage", ignoreCase: true))
            && statement.TryGetProperty("Resource", out var resource) && Values(resource).Any(pattern => Glob(pattern, queueArn, ignoreCase: false))
            && (!statement.TryGetProperty("Condition", out var condition) || ConditionMatches(condition, context));
    }

    private static bool PrincipalMatches(JsonElement principal)
    {
        if (principal.ValueKind == JsonValueKind.String)
        {
            return principal.GetString() == "*";
        }

        if (principal.ValueKind != JsonValueKind.Object)
        {
            return false;
        }

        return (principal.TryGetProperty("AWS", out var aws) && Values(aws).Contains("*"))
            || (principal.TryGetProperty("Service", out var service) && Values(service).Contains(SnsPrincipal, StringComparer.Ordinal));
    }

    private static bool ConditionMatches(JsonElement condition, IReadOnlyDictionary<string, string> context)
    {
        if (condition.ValueKind != JsonValueKind.Object)
        {
            return false;
        }

        foreach (var block in condition.EnumerateObject())
        {
            bool exact, ignoreCase;
            switch (block.Name)
            {
                case "ArnEquals" or "StringEquals":
                    (exact, ignoreCase) = (true, false);
                    break;
                case "StringEqualsIgnoreCase":
                    (exact, ignoreCase) = (true, true);
                    break;
                case "ArnLike" or "StringLike":
                    (exact, ignoreCase) = (false, false);
                    break;
                default:
                    return false;
            }

            if (block.Value.ValueKind != JsonValueKind.Object)
            {
                return false;
            }

            foreach (var key in block.Value.EnumerateObject())
            {
                if (!context.TryGetValue(key.Name, out var actual))
                {
                    return false;
                }

                var comparison = ignoreCase ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;
                var matched = Values(key.Value).Any(expected => exact ? string.Equals(expected, actual, comparison) : Glob(expected, actual, ignoreCase));
                if (!matched)
                {
                    return false;
                }
            }
        }

        return true;
    }

    private static IReadOnlyList<string> Values(JsonElement element) => element.ValueKind switch
    {
        JsonValueKind.String => [element.GetString()!],
        JsonValueKind.Array => element.EnumerateArray().Where(item => item.ValueKind == JsonValueKind.String).Select(item => item.GetString()!).ToList(),
        _ => [],
    };

    private static bool Glob(string pattern, string value, bool ignoreCase)
    {
        var regex = "^" + Regex.Escape(pattern).Replace("\\*", ".*", StringComparison.Ordinal).Replace("\\?", ".", StringComparison.Ordinal) + "$";
        return Regex.IsMatch(value, regex, (ignoreCase ? RegexOptions.IgnoreCase : RegexOptions.None) | RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
    }
}
