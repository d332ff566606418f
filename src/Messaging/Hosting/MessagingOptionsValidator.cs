using Microsoft.Extensions.Options;

namespace Messaging.Hosting;

/// <summary>Fails start-up with messages that name the offending setting.</summary>
internal sealed class MessagingOptionsValidator(MessagingModel model) : IValidateOptions<MessagingOptions>
{
    public ValidateOptionsResult Validate(string? name, MessagingOptions options)
    {
        var errors = new List<string>();
        const string prefix = MessagingOptions.SectionName;

        if (string.IsNullOrWhiteSpace(options.Transport))
        {
            errors.Add($"{prefix}:Transport is empty; set it to one of: {string.Join(", ", model.Transports.Keys)}.");
        }
        else if (!model.Transports.ContainsKey(options.Transport))
        {
            errors.Add($"{prefix}:Transport is '{options.Transport}', which is not a registered transport. Registered: {string.Join(", ", model.Transports.Keys)}. " +
                       "Reference the adapter package and call its Add... method (for example AddRabbitMq()).");
        }

        if (options.Source is not null && !Uri.TryCreate(options.Source, UriKind.RelativeOrAbsolute, out _))
        {
            errors.Add($"{prefix}:Source '{options.Source}' is not a URI reference.");
        }

        if (options.PublishTimeout <= TimeSpan.Zero || options.PublishTimeout > TimeSpan.FromDays(1))
        {
            errors.Add($"{prefix}:PublishTimeout must be positive and at most one day (was {options.PublishTimeout}).");
        }

        var polling = options.Metrics.BacklogPollingInterval;
        if (polling != TimeSpan.Zero && (polling < TimeSpan.FromMilliseconds(100) || polling > TimeSpan.FromDays(1)))
        {
            errors.Add($"{prefix}:Metrics:BacklogPollingInterval must be zero (off) or between 100 ms and one day (was {polling}).");
        }

        foreach (var (subscriptionName, sub) in options.Subscriptions)
        {
            var at = $"{prefix}:Subscriptions:{subscriptionName}";
            if (!model.Subscriptions.ContainsKey(subscriptionName))
            {
                errors.Add($"{at} configures a subscription that no code declares (declared: {string.Join(", ", model.Subscriptions.Keys)}).");
                continue;
            }
            if (!EntityNames.IsValid(sub.Topic, out var topicProblem))
            {
                errors.Add($"{at}:Topic '{sub.Topic}' is invalid: {topicProblem}");
            }
            if (sub.MaxAttempts < 1)
            {
                errors.Add($"{at}:MaxAttempts must be at least 1 (was {sub.MaxAttempts}).");
            }
            if (sub.MaxAttempts > 1000)
            {
                errors.Add($"{at}:MaxAttempts must be at most 1000 (was {sub.MaxAttempts}).");
            }
            if (sub.Concurrency is < 1 or > 1000)
            {
                errors.Add($"{at}:Concurrency must be between 1 and 1000 (was {sub.Concurrency}).");
            }
            if (sub.Prefetch is < 1 or > 65535)
            {
                errors.Add($"{at}:Prefetch must be between 1 and 65535 (was {sub.Prefetch}).");
            }
            if (sub.BackoffDelay < TimeSpan.Zero)
            {
                errors.Add($"{at}:BackoffDelay must not be negative (was {sub.BackoffDelay}).");
            }
            if (sub.Backoff == Policy.BackoffKind.Exponential)
            {
                if (sub.MaxBackoffDelay < sub.BackoffDelay)
                {
                    errors.Add($"{at}:MaxBackoffDelay ({sub.MaxBackoffDelay}) must not be below BackoffDelay ({sub.BackoffDelay}).");
                }
                if (sub.BackoffMultiplier < 1)
                {
                    errors.Add($"{at}:BackoffMultiplier must be at least 1 (was {sub.BackoffMultiplier}).");
                }
            }
            if (sub.BackoffDelay > TimeSpan.FromDays(1) || sub.MaxBackoffDelay > TimeSpan.FromDays(1))
            {
                errors.Add($"{at}: backoff delays must not exceed one day.");
            }
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
