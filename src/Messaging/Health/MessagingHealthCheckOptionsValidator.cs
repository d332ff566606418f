using Microsoft.Extensions.Options;

namespace Messaging.Health;

/// <summary>Fails start-up with messages that name the offending setting.</summary>
internal sealed class MessagingHealthCheckOptionsValidator : IValidateOptions<MessagingHealthCheckOptions>
{
    public ValidateOptionsResult Validate(string? name, MessagingHealthCheckOptions options)
    {
        var errors = new List<string>();
        const string prefix = MessagingHealthCheckOptions.SectionName;
        if (options.ConsumerFailureGracePeriod < TimeSpan.Zero || options.ConsumerFailureGracePeriod > TimeSpan.FromDays(1))
        {
            errors.Add($"{prefix}:ConsumerFailureGracePeriod must be between zero and one day (was {options.ConsumerFailureGracePeriod}).");
        }
        if (options.DeadLetterDegradedThreshold is < 1 or > 100_000)
        {
            errors.Add($"{prefix}:DeadLetterDegradedThreshold must be between 1 and 100000, or unset to turn the dead-letter check off (was {options.DeadLetterDegradedThreshold}).");
        }
        if (options.CheckTimeout <= TimeSpan.Zero || options.CheckTimeout > TimeSpan.FromMinutes(5))
        {
            errors.Add($"{prefix}:CheckTimeout must be positive and at most five minutes (was {options.CheckTimeout}).");
        }
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
