using System.Net.Mime;
using System.Text.Json;
using CloudNative.CloudEvents;
using CloudNative.CloudEvents.SystemTextJson;
using Spectre.Console;

namespace Messaging.Cli;

/// <summary><c>messaging publish --topic T --file event.json</c>: one structured-mode CloudEvent.</summary>
internal static class PublishCommand
{
    private static readonly ContentType Structured = new("application/cloudevents+json; charset=utf-8");

    /// <summary>Reads and parses the file; every problem is a usage error that names the file and what is wrong.</summary>
    public static CloudEvent Read(string path)
    {
        if (!File.Exists(path))
        {
            throw new CliException(ExitCodes.UsageError, $"event file not found: {path}");
        }
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new CliException(ExitCodes.UsageError, $"event file {path} cannot be read: {ex.Message}", ex);
        }
        return Parse(bytes, path);
    }

    internal static CloudEvent Parse(byte[] bytes, string path)
    {
        CloudEvent cloudEvent;
        try
        {
            cloudEvent = new JsonEventFormatter().DecodeStructuredModeMessage(bytes, Structured, extensionAttributes: null);
        }
        catch (JsonException ex)
        {
            var where = ex.LineNumber is { } line ? $" at line {line + 1}, position {ex.BytePositionInLine + 1}" : "";
            throw new CliException(ExitCodes.UsageError, $"event file {path} is not valid JSON{where}: {CliConfiguration.OneLine(ex.Message)}", ex);
        }
        catch (Exception ex) when (ex is ArgumentException or FormatException or InvalidOperationException or NotSupportedException)
        {
            throw new CliException(ExitCodes.UsageError, $"event file {path} is not a structured-mode CloudEvent: {CliConfiguration.OneLine(ex.Message)}", ex);
        }
        if (!cloudEvent.IsValid)
        {
            var missing = cloudEvent.SpecVersion.RequiredAttributes.Where(a => cloudEvent[a] is null).Select(a => a.Name);
            throw new CliException(ExitCodes.UsageError, $"event file {path} is not a complete CloudEvent: missing required attribute(s) {string.Join(", ", missing)}.");
        }
        return cloudEvent;
    }

    public static async Task<int> PublishAsync(CliContext context, CliSession session, string topic, CloudEvent cloudEvent, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(topic))
        {
            throw new CliException(ExitCodes.UsageError, "--topic is empty.");
        }
        await session.Publisher.PublishAsync(topic, cloudEvent, cancellationToken).ConfigureAwait(false);
        context.Console.WriteLine($"Published {cloudEvent.Id} ({cloudEvent.Type}) to {topic} on {session.Transport.Name}.");
        return ExitCodes.Success;
    }
}
