using System.Globalization;
using System.Text;

namespace Messaging.LocalAws.Protocol;

/// <summary>
/// The documented content rules shared by SQS and SNS: the XML character set allowed in bodies and
/// string values, message attribute names, and numeric attribute values.
/// </summary>
internal static class MessageContentRules
{
    public const int MaxAttributeNameLength = 256;
    public const int MaxDataTypeLength = 256;

    /// <summary>
    /// Allowed: #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF. Returns the first
    /// offending code point, or null.
    /// </summary>
    public static int? FindInvalidCharacter(string text)
    {
        foreach (var rune in text.EnumerateRunes())
        {
            var value = rune.Value;
            var allowed = value is 0x9 or 0xA or 0xD
                || value is >= 0x20 and <= 0xD7FF
                || value is >= 0xE000 and <= 0xFFFD
                || value is >= 0x10000 and <= 0x10FFFF;
            if (!allowed)
            {
                return value;
            }
        }

        // Unpaired surrogates enumerate as U+FFFD replacement runes; catch them explicitly.
        for (var i = 0; i < text.Length; i++)
        {
            if (char.IsHighSurrogate(text[i]) && (i + 1 >= text.Length || !char.IsLowSurrogate(text[i + 1])))
            {
                return text[i];
            }

            if (char.IsLowSurrogate(text[i]) && (i == 0 || !char.IsHighSurrogate(text[i - 1])))
            {
                return text[i];
            }

            if (char.IsHighSurrogate(text[i]))
            {
                i++;
            }
        }

        return null;
    }

    /// <summary>
    /// Name rules: 1-256 characters from A-Z, a-z, 0-9, underscore, hyphen and period; no leading or
    /// trailing period, no two periods in a row; not starting with the reserved "AWS." or "Amazon."
    /// prefixes in any casing. Returns the reason the name is invalid, or null.
    /// </summary>
    public static string? CheckAttributeName(string name)
    {
        if (name.Length == 0)
        {
            return "Message attribute name can not be null or empty.";
        }

        if (name.Length > MaxAttributeNameLength)
        {
            return $"Message attribute name '{name}' is longer than {MaxAttributeNameLength} characters.";
        }

        if (name.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.')))
        {
            return $"Message attribute name '{name}' can only contain alphanumeric characters, hyphens (-), underscores (_) and periods (.).";
        }

        if (name.StartsWith('.') || name.EndsWith('.'))
        {
            return $"Message attribute name '{name}' can not start or end with a period (.).";
        }

        if (name.Contains("..", StringComparison.Ordinal))
        {
            return $"Message attribute name '{name}' can not have successive periods (..).";
        }

        if (name.StartsWith("AWS.", StringComparison.OrdinalIgnoreCase) || name.StartsWith("Amazon.", StringComparison.OrdinalIgnoreCase))
        {
            return $"Message attribute name '{name}' uses a reserved prefix ('AWS.' and 'Amazon.' are reserved for AWS).";
        }

        return null;
    }

    /// <summary>
    /// Numbers: an optionally signed decimal with optional exponent, at most 38 significant digits, magnitude
    /// between 10^-128 and 10^126 (or zero).
    /// </summary>
    public static bool IsValidNumber(string value)
    {
        var text = value.Trim();
        if (text.Length == 0 || text.Length > 200)
        {
            return false;
        }

        var index = 0;
        if (text[index] is '+' or '-')
        {
            index++;
        }

        var digits = new StringBuilder();
        var sawDigit = false;
        var sawPoint = false;
        for (; index < text.Length; index++)
        {
            var c = text[index];
            if (char.IsAsciiDigit(c))
            {
                sawDigit = true;
                digits.Append(c);
            }
            else if (c == '.' && !sawPoint)
            {
                sawPoint = true;
            }
            else
            {
                break;
            }
        }

        if (!sawDigit)
        {
            return false;
        }

        if (index < text.Length)
        {
            if (text[index] is not ('e' or 'E') || !int.TryParse(text.AsSpan(index + 1), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _))
            {
                return false;
            }
        }

        var significant = digits.ToString().Trim('0');
        if (significant.Length > 38)
        {
            return false;
        }

        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var number) || !double.IsFinite(number))
        {
            return false;
        }

        var magnitude = Math.Abs(number);
        return magnitude == 0 || magnitude is >= 1e-128 and <= 1e126;
    }
}
