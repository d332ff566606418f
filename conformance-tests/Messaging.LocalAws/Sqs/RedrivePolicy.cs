using System.Globalization;
using System.Text.Json;

namespace Messaging.LocalAws.Sqs;

/// <summary>A queue's <c>RedrivePolicy</c>: where messages go after <see cref="MaxReceiveCount"/> receives.</summary>
internal sealed record RedrivePolicy(string DeadLetterTargetArn, int MaxReceiveCount)
{
    public string ToJson() =>
        JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["deadLetterTargetArn"] = DeadLetterTargetArn,
            ["maxReceiveCount"] = MaxReceiveCount,
        });

    /// <summary>Parses the JSON form; <c>maxReceiveCount</c> may be a number or a numeric string (both are accepted by SQS).</summary>
    public static RedrivePolicy Parse(string json)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json);
        }
        catch (JsonException)
        {
            throw Invalid(json, "Invalid value for the parameter RedrivePolicy: the value must be a JSON object.");
        }

        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw Invalid(json, "Invalid value for the parameter RedrivePolicy: the value must be a JSON object.");
            }

            string? target = null;
            int? maxReceiveCount = null;
            foreach (var property in document.RootElement.EnumerateObject())
            {
                switch (property.Name)
                {
                    case "deadLetterTargetArn" when property.Value.ValueKind == JsonValueKind.String:
                        target = property.Value.GetString();
                        break;
                    case "maxReceiveCount" when property.Value.ValueKind == JsonValueKind.Number && property.Value.TryGetInt32(out var number):
                        maxReceiveCount = number;
                        break;
                    case "maxReceiveCount" when property.Value.ValueKind == JsonValueKind.String
                        && int.TryParse(property.Value.GetString(), NumberStyles.None, CultureInfo.InvariantCulture, out var parsed):
                        maxReceiveCount = parsed;
                        break;
                    default:
                        throw Invalid(json, $"Redrive policy has an unknown or mistyped field '{property.Name}'.");
                }
            }

            if (string.IsNullOrEmpty(target))
            {
                throw Invalid(json, "Redrive policy does not contain deadLetterTargetArn.");
            }

            if (maxReceiveCount is null)
            {
                throw Invalid(json, "Redrive policy does not contain maxReceiveCount.");
            }

            if (maxReceiveCount is < 1 or > 1000)
            {
                throw Invalid(json, "Invalid value for maxReceiveCount: must be an integer from 1 to 1000.");
            }

            return new RedrivePolicy(target, maxReceiveCount.Value);
        }
    }

    private static Protocol.AwsServiceException Invalid(string json, string reason) =>
        SqsErrors.InvalidParameterValue("RedrivePolicy", json, reason);
}
