using Microsoft.Extensions.Options;

namespace Messaging.PubSub;

/// <summary>Checks <see cref="PubSubTransportOptions"/> at start-up; every message names the setting.</summary>
internal sealed class PubSubOptionsValidator : IValidateOptions<PubSubTransportOptions>
{
    public ValidateOptionsResult Validate(string? name, PubSubTransportOptions options)
    {
        var problems = Problems(options);
        return problems.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(problems);
    }

    internal static List<string> Problems(PubSubTransportOptions options)
    {
        var problems = new List<string>();
        if (string.IsNullOrWhiteSpace(options.ProjectId))
        {
            problems.Add($"{PubSubTransportOptions.SectionName}:ProjectId is required.");
        }
        var emulator = options.ResolveEmulatorHost();
        if (emulator is not null && !Uri.TryCreate("http://" + emulator, UriKind.Absolute, out _))
        {
            problems.Add($"{PubSubTransportOptions.SectionName}:EmulatorHost (or PUBSUB_EMULATOR_HOST) must be host:port, not '{emulator}'.");
        }
        if (!string.IsNullOrWhiteSpace(options.Endpoint)
            && (!Uri.TryCreate(options.Endpoint, UriKind.Absolute, out var endpoint) || (endpoint.Scheme != Uri.UriSchemeHttps && endpoint.Scheme != Uri.UriSchemeHttp)))
        {
            problems.Add($"{PubSubTransportOptions.SectionName}:Endpoint must be an absolute https:// URI (http:// only for a local emulator), not '{options.Endpoint}'.");
        }
        if (options.MaxBatchCount is < 1 or > 1000)
        {
            problems.Add($"{PubSubTransportOptions.SectionName}:MaxBatchCount must be between 1 and 1000.");
        }
        if (options.MaxBatchBytes is < 1024 or > PubSubTransportOptions.BrokerMaxMessageBytes)
        {
            problems.Add($"{PubSubTransportOptions.SectionName}:MaxBatchBytes must be between 1024 and {PubSubTransportOptions.BrokerMaxMessageBytes}.");
        }
        if (options.MaxBatchDelay < TimeSpan.Zero || options.MaxBatchDelay > TimeSpan.FromSeconds(10))
        {
            problems.Add($"{PubSubTransportOptions.SectionName}:MaxBatchDelay must be between 0 and 10 seconds.");
        }
        if (options.MaxQueuedEvents < 1)
        {
            problems.Add($"{PubSubTransportOptions.SectionName}:MaxQueuedEvents must be at least 1 (events held per topic for publishing).");
        }
        if (options.MaxQueuedBytes < 1024)
        {
            problems.Add($"{PubSubTransportOptions.SectionName}:MaxQueuedBytes must be at least 1024 (bytes held per topic for publishing).");
        }
        if (options.MaxOutstandingMessages < 0)
        {
            problems.Add($"{PubSubTransportOptions.SectionName}:MaxOutstandingMessages must be 0 (derived from the subscription) or more.");
        }
        if (options.MaxOutstandingBytes < 0)
        {
            problems.Add($"{PubSubTransportOptions.SectionName}:MaxOutstandingBytes must be 0 (no limit) or more.");
        }
        if (options.AckDeadline < TimeSpan.FromSeconds(10) || options.AckDeadline > TimeSpan.FromSeconds(600))
        {
            problems.Add($"{PubSubTransportOptions.SectionName}:AckDeadline must be between 10 seconds and 10 minutes.");
        }
        if (options.CrashRedeliveryAllowance is < 0 or > 95)
        {
            problems.Add($"{PubSubTransportOptions.SectionName}:CrashRedeliveryAllowance must be between 0 and 95 (was {options.CrashRedeliveryAllowance}).");
        }
        if (options.MaxEventSizeBytes is < 1024 or > PubSubTransportOptions.BrokerMaxMessageBytes)
        {
            problems.Add($"{PubSubTransportOptions.SectionName}:MaxEventSizeBytes must be between 1024 and {PubSubTransportOptions.BrokerMaxMessageBytes}.");
        }
        if (options.DeadLetterRetention < PubSubTransportOptions.MinDeadLetterRetention || options.DeadLetterRetention > PubSubTransportOptions.MaxDeadLetterRetention)
        {
            problems.Add($"{PubSubTransportOptions.SectionName}:DeadLetterRetention must be between 10 minutes and 7 days (Pub/Sub's limits for a subscription's message retention), not {options.DeadLetterRetention}.");
        }
        return problems;
    }
}
