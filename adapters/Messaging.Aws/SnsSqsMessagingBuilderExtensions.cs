using Messaging.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Messaging.Aws;

/// <summary>Registration of the SNS/SQS transport on a <see cref="MessagingBuilder"/>.</summary>
public static class SnsSqsMessagingBuilderExtensions
{
    /// <summary>
    /// Registers the SNS/SQS transport, selected by <c>"Messaging": { "Transport": "SnsSqs" }</c> and configured from
    /// <c>Messaging:SnsSqs</c> (and <paramref name="configure"/>). Settings are validated at start-up when it is selected.
    /// </summary>
    public static MessagingBuilder AddSnsSqs(this MessagingBuilder builder, Action<SnsSqsTransportOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var options = builder.AddTransportOptions<SnsSqsTransportOptions>(SnsSqsTransport.TransportName);
        if (configure is not null)
        {
            options.Configure(configure);
        }
        builder.Services.AddSingleton<IValidateOptions<SnsSqsTransportOptions>, SnsSqsOptionsValidator>();
        return builder.AddTransport(SnsSqsTransport.TransportName, (sp, context) =>
            new SnsSqsTransport(sp.GetRequiredService<IOptions<SnsSqsTransportOptions>>().Value, context.ExtensionAttributes, context.LoggerFactory));
    }
}

internal sealed class SnsSqsOptionsValidator : IValidateOptions<SnsSqsTransportOptions>
{
    private const string Prefix = "Messaging:" + SnsSqsTransport.TransportName;

    public ValidateOptionsResult Validate(string? name, SnsSqsTransportOptions options)
    {
        var problems = Problems(options);
        return problems.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(problems);
    }

    internal static List<string> Problems(SnsSqsTransportOptions o)
    {
        var errors = new List<string>();
        foreach (var (setting, value) in new[] { ("ServiceUrl", o.ServiceUrl), ("SnsServiceUrl", o.SnsServiceUrl), ("SqsServiceUrl", o.SqsServiceUrl) })
        {
            if (value is not null && (!Uri.TryCreate(value, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https")))
            {
                errors.Add($"{Prefix}:{setting} '{value}' is not an absolute http:// or https:// URL.");
            }
        }
        if (o.Region is not null && !System.Text.RegularExpressions.Regex.IsMatch(o.Region, "^[a-z]{2}(-[a-z]+)+-[0-9]+$"))
        {
            errors.Add($"{Prefix}:Region '{o.Region}' is not an AWS region name such as 'eu-west-1'.");
        }
        if (!string.IsNullOrEmpty(o.AccessKeyId) && string.IsNullOrEmpty(o.SecretAccessKey))
        {
            errors.Add($"{Prefix}:SecretAccessKey is empty while AccessKeyId is set.");
        }
        if (string.IsNullOrEmpty(o.AccessKeyId) && !string.IsNullOrEmpty(o.SecretAccessKey))
        {
            errors.Add($"{Prefix}:AccessKeyId is empty while SecretAccessKey is set.");
        }
        if (o.AccountId is not null && !System.Text.RegularExpressions.Regex.IsMatch(o.AccountId, "^[0-9]{12}$"))
        {
            errors.Add($"{Prefix}:AccountId '{o.AccountId}' is not a 12-digit AWS account id.");
        }
        if (o.WaitTimeSeconds is < 0 or > 20)
        {
            errors.Add($"{Prefix}:WaitTimeSeconds must be between 0 and 20, SQS's long-polling range (was {o.WaitTimeSeconds}).");
        }
        if (o.VisibilityTimeout < TimeSpan.FromSeconds(1) || o.VisibilityTimeout > TimeSpan.FromHours(12))
        {
            errors.Add($"{Prefix}:VisibilityTimeout must be between 1 second and 12 hours, SQS's range (was {o.VisibilityTimeout}).");
        }
        if (o.DeadLetterReadVisibility < TimeSpan.FromSeconds(1) || o.DeadLetterReadVisibility > TimeSpan.FromHours(12))
        {
            errors.Add($"{Prefix}:DeadLetterReadVisibility must be between 1 second and 12 hours (was {o.DeadLetterReadVisibility}).");
        }
        if (o.CrashRedeliveryAllowance is < 1 or > 100)
        {
            errors.Add($"{Prefix}:CrashRedeliveryAllowance must be between 1 and 100 (was {o.CrashRedeliveryAllowance}).");
        }
        if (o.MaxConcurrentReceives is < 1 or > 64)
        {
            errors.Add($"{Prefix}:MaxConcurrentReceives must be between 1 and 64 (was {o.MaxConcurrentReceives}).");
        }
        if (o.MaxConcurrentPublishes is < 1 or > 256)
        {
            errors.Add($"{Prefix}:MaxConcurrentPublishes must be between 1 and 256 (was {o.MaxConcurrentPublishes}).");
        }
        if (o.MaxRetries is < 0 or > 20)
        {
            errors.Add($"{Prefix}:MaxRetries must be between 0 and 20 (was {o.MaxRetries}).");
        }
        if (o.RequestTimeout <= TimeSpan.Zero)
        {
            errors.Add($"{Prefix}:RequestTimeout must be positive (was {o.RequestTimeout}).");
        }
        foreach (var topic in o.FifoTopics)
        {
            if (string.IsNullOrWhiteSpace(topic))
            {
                errors.Add($"{Prefix}:FifoTopics lists an empty topic name.");
            }
        }
        if (o.MaxEventSizeBytes is < 1024 or > SnsSqsCodec.MaxWireBytes)
        {
            errors.Add($"{Prefix}:MaxEventSizeBytes must be between 1024 and 262144, SQS's message limit (was {o.MaxEventSizeBytes}).");
        }
        return errors;
    }
}
