namespace Messaging.Hosting;

/// <summary>Names of topics and subscriptions must be valid on every broker, so a service can switch broker without renaming.</summary>
public static class EntityNames
{
    /// <summary>Longest name; leaves room for suffixes such as <c>.dead-letter</c> within every broker's limit.</summary>
    public const int MaxLength = 200;

    /// <summary>Throws <see cref="ArgumentException"/> unless <paramref name="name"/> uses 3 to 200 of: letters, digits, '-', '_', '.'; starting with a letter.</summary>
    public static void Validate(string name, string kind)
    {
        if (!IsValid(name, out var problem))
        {
            throw new ArgumentException($"'{name}' is not a valid {kind} name: {problem}", kind);
        }
    }

    /// <summary>
    /// Whether <paramref name="name"/> is a valid topic or subscription name (see <see cref="Validate"/> for the rules).
    /// </summary>
    /// <param name="name">The name to check; null is invalid.</param>
    /// <param name="problem">What is wrong with the name, as a sentence for an error message; empty when it is valid.</param>
    public static bool IsValid(string? name, out string problem)
    {
        if (string.IsNullOrEmpty(name) || name.Length < 3 || name.Length > MaxLength)
        {
            problem = $"it must be 3 to {MaxLength} characters long.";
            return false;
        }
        if (!char.IsAsciiLetter(name[0]))
        {
            problem = "it must start with a letter.";
            return false;
        }
        foreach (var c in name)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
            {
                problem = $"'{c}' is not allowed; use letters, digits, '-', '_' and '.'.";
                return false;
            }
        }
        problem = string.Empty;
        return true;
    }
}
