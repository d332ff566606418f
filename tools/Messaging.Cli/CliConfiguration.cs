using Microsoft.Extensions.Configuration;

namespace Messaging.Cli;

/// <summary>
/// The configuration a service reads, in the same order: the settings file (<c>appsettings.json</c> and
/// <c>appsettings.{Environment}.json</c>), environment variables (<c>Messaging__Transport</c>), then the
/// <c>--Messaging:Key=value</c> (or <c>--Messaging:Key value</c>) overrides of the command line.
/// </summary>
internal static class CliConfiguration
{
    private const string OverridePrefix = "--" + Hosting.MessagingOptions.SectionName + ":";

    /// <summary>Takes the <c>--Messaging:...</c> overrides out of <paramref name="args"/>; the rest goes to the parser.</summary>
    public static (string[] Arguments, IReadOnlyDictionary<string, string?> Overrides) SplitOverrides(IReadOnlyList<string> args)
    {
        var rest = new List<string>();
        var overrides = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        for (var i = 0; i < args.Count; i++)
        {
            var arg = args[i];
            if (arg == "--")
            {
                rest.AddRange(args.Skip(i));
                break;
            }
            if (!arg.StartsWith(OverridePrefix, StringComparison.OrdinalIgnoreCase))
            {
                rest.Add(arg);
                continue;
            }
            var body = arg[2..];
            var equals = body.IndexOf('=', StringComparison.Ordinal);
            string key;
            string value;
            if (equals >= 0)
            {
                key = body[..equals];
                value = body[(equals + 1)..];
            }
            else
            {
                if (i + 1 >= args.Count || args[i + 1].StartsWith("--", StringComparison.Ordinal))
                {
                    throw new CliException(ExitCodes.UsageError, $"{arg} has no value; write {arg}=VALUE or {arg} VALUE.");
                }
                key = body;
                value = args[++i];
            }
            if (key.Length <= OverridePrefix.Length - 2 || key.EndsWith(':'))
            {
                throw new CliException(ExitCodes.UsageError, $"{arg} names no setting; write for example --Messaging:Transport=RabbitMQ.");
            }
            overrides[key] = value;
        }
        return (rest.ToArray(), overrides);
    }

    /// <summary>
    /// Builds the configuration. <paramref name="settingsFile"/> must exist when given; otherwise <c>appsettings.json</c> of
    /// the current directory is read when there is one.
    /// </summary>
    public static IConfigurationRoot Build(string? settingsFile, IReadOnlyDictionary<string, string?> overrides)
    {
        var builder = new ConfigurationBuilder();
        string? path;
        if (settingsFile is not null)
        {
            path = Path.GetFullPath(settingsFile);
            if (!File.Exists(path))
            {
                throw new CliException(ExitCodes.UsageError, $"settings file not found: {settingsFile}");
            }
        }
        else
        {
            path = Path.GetFullPath("appsettings.json");
            path = File.Exists(path) ? path : null;
        }
        if (path is not null)
        {
            var environment = Environment.GetEnvironmentVariable("DOTNET_ENVIRONMENT") ?? Environment.GetEnvironmentVariable("ASPNETCORE_ENVIRONMENT");
            builder.AddJsonFile(path, optional: false, reloadOnChange: false);
            if (!string.IsNullOrWhiteSpace(environment))
            {
                var environmentFile = Path.Combine(Path.GetDirectoryName(path)!, $"{Path.GetFileNameWithoutExtension(path)}.{environment}.json");
                builder.AddJsonFile(environmentFile, optional: true, reloadOnChange: false);
            }
        }
        builder.AddEnvironmentVariables();
        builder.AddInMemoryCollection(overrides);
        try
        {
            return builder.Build();
        }
        catch (Exception ex) when (ex is InvalidDataException or FormatException or System.Text.Json.JsonException)
        {
            throw new CliException(ExitCodes.UsageError, $"settings file {path} is not valid JSON: {OneLine(ex.Message)}", ex);
        }
    }

    /// <summary>The subscriptions the configuration declares with a <c>Topic</c> (<c>Messaging:Subscriptions:{name}:Topic</c>).</summary>
    public static IReadOnlyList<(string Name, string Topic)> DeclaredSubscriptions(IConfiguration configuration) =>
        Subscriptions(configuration)
            .Where(s => !string.IsNullOrWhiteSpace(s["Topic"]))
            .Select(s => (s.Key, s["Topic"]!))
            .ToList();

    /// <summary>Configured subscriptions without a <c>Topic</c>: only their service knows the topic, in code.</summary>
    public static IReadOnlyList<string> SubscriptionsWithoutTopic(IConfiguration configuration) =>
        Subscriptions(configuration).Where(s => string.IsNullOrWhiteSpace(s["Topic"])).Select(s => s.Key).ToList();

    /// <summary>
    /// The configuration the messaging services are built from: everything, except the settings of subscriptions that name
    /// no topic (a service declares those in code; here they would be refused as undeclared).
    /// </summary>
    public static IConfiguration ForServices(IConfiguration configuration)
    {
        var without = SubscriptionsWithoutTopic(configuration)
            .Select(name => $"{Hosting.MessagingOptions.SectionName}:Subscriptions:{name}")
            .ToList();
        if (without.Count == 0)
        {
            return configuration;
        }
        var kept = configuration.AsEnumerable()
            .Where(pair => !without.Any(prefix => pair.Key.Equals(prefix, StringComparison.OrdinalIgnoreCase)
                                                  || pair.Key.StartsWith(prefix + ":", StringComparison.OrdinalIgnoreCase)));
        return new ConfigurationBuilder().AddInMemoryCollection(kept).Build();
    }

    private static IEnumerable<IConfigurationSection> Subscriptions(IConfiguration configuration) =>
        configuration.GetSection($"{Hosting.MessagingOptions.SectionName}:Subscriptions").GetChildren();

    internal static string OneLine(string text) => string.Join(' ', text.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
}
