using System.Net.Mime;
using CloudNative.CloudEvents;
using CloudNative.CloudEvents.SystemTextJson;

namespace Messaging.Envelope;

/// <summary>CloudEvents JSON structured mode (<c>application/cloudevents+json</c>), shared by every transport.</summary>
public static class StructuredJson
{
    /// <summary>The media type of a structured-mode JSON CloudEvent.</summary>
    public const string MediaType = "application/cloudevents+json";

    private static readonly JsonEventFormatter Formatter = new();

    /// <summary>True when a content type announces a structured-mode CloudEvent.</summary>
    public static bool IsStructured(string? contentType) =>
        contentType is not null && contentType.StartsWith("application/cloudevents", StringComparison.OrdinalIgnoreCase)
        && !contentType.StartsWith("application/cloudevents-batch", StringComparison.OrdinalIgnoreCase);

    /// <summary>Encodes an event (whose data is bytes or absent) as one JSON document.</summary>
    public static ReadOnlyMemory<byte> Encode(CloudEvent cloudEvent) =>
        Formatter.EncodeStructuredModeMessage(cloudEvent, out _);

    /// <summary>Decodes a JSON document into an event whose data is bytes; throws <see cref="InvalidCloudEventException"/>.</summary>
    public static CloudEvent Decode(ReadOnlyMemory<byte> body, string? contentType, IEnumerable<CloudEventAttribute>? extensionAttributes)
    {
        CloudEvent cloudEvent;
        try
        {
            cloudEvent = Formatter.DecodeStructuredModeMessage(body, contentType is null ? null : new ContentType(contentType), extensionAttributes);
        }
        catch (Exception ex) when (ex is ArgumentException or FormatException or System.Text.Json.JsonException or InvalidOperationException)
        {
            throw new InvalidCloudEventException($"The body is not a valid structured-mode JSON CloudEvent: {ex.Message}", ex);
        }
        CloudEventData.Normalize(cloudEvent);
        CloudEventAttributeMap.EnsureValid(cloudEvent);
        return cloudEvent;
    }
}
