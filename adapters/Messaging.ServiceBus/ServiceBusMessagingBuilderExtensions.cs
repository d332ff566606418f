using Azure.Core;
using Messaging.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Messaging.ServiceBus;

/// <summary>Registration of the Azure Service Bus transport on a <see cref="MessagingBuilder"/>.</summary>
public static class ServiceBusMessagingBuilderExtensions
{
    /// <summary>
    /// Registers the Azure Service Bus transport, selected by <c>"Messaging": { "Transport": "ServiceBus" }</c> and configured
    /// from <c>Messaging:ServiceBus</c> (and <paramref name="configure"/>). With <c>FullyQualifiedNamespace</c> instead of a
    /// connection string, the <see cref="TokenCredential"/> registered in dependency injection is used unless the options
    /// carry one. Settings are validated at start-up when the transport is selected.
    /// </summary>
    public static MessagingBuilder AddServiceBus(this MessagingBuilder builder, Action<ServiceBusTransportOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var options = builder.AddTransportOptions<ServiceBusTransportOptions>(ServiceBusTransport.TransportName);
        if (configure is not null)
        {
            options.Configure(configure);
        }
        builder.Services.AddSingleton<IValidateOptions<ServiceBusTransportOptions>, ServiceBusOptionsValidator>();
        return builder.AddTransport(ServiceBusTransport.TransportName, (sp, context) =>
        {
            var settings = sp.GetRequiredService<IOptions<ServiceBusTransportOptions>>().Value;
            if (string.IsNullOrWhiteSpace(settings.ConnectionString) && settings.Credential is null)
            {
                settings.Credential = sp.GetService<TokenCredential>();
            }
            return new ServiceBusTransport(settings, context.ExtensionAttributes, context.LoggerFactory);
        });
    }
}

internal sealed class ServiceBusOptionsValidator : IValidateOptions<ServiceBusTransportOptions>
{
    private const string Prefix = ServiceBusTransportOptions.SectionName;

    public ValidateOptionsResult Validate(string? name, ServiceBusTransportOptions o)
    {
        var errors = new List<string>();
        var hasConnectionString = !string.IsNullOrWhiteSpace(o.ConnectionString);
        var hasNamespace = !string.IsNullOrWhiteSpace(o.FullyQualifiedNamespace);
        if (hasConnectionString == hasNamespace)
        {
            errors.Add($"Set exactly one of {Prefix}:ConnectionString and {Prefix}:FullyQualifiedNamespace (with a TokenCredential).");
        }
        if (hasConnectionString && ConnectionStringProblem(o.ConnectionString!) is { } problem)
        {
            errors.Add($"{Prefix}:ConnectionString {problem}");
        }
        if (!string.IsNullOrWhiteSpace(o.AdministrationConnectionString) && ConnectionStringProblem(o.AdministrationConnectionString) is { } adminProblem)
        {
            errors.Add($"{Prefix}:AdministrationConnectionString {adminProblem}");
        }
        if (hasNamespace && (o.FullyQualifiedNamespace!.Contains("://", StringComparison.Ordinal) || o.FullyQualifiedNamespace.Contains('/', StringComparison.Ordinal)))
        {
            errors.Add($"{Prefix}:FullyQualifiedNamespace must be a host name such as my-namespace.servicebus.windows.net (was '{o.FullyQualifiedNamespace}').");
        }
        if (o.MaxEventSizeBytes is < 1024 or > ServiceBusTransportOptions.PremiumTierMaxMessageBytes)
        {
            errors.Add($"{Prefix}:MaxEventSizeBytes must be between 1024 and {ServiceBusTransportOptions.PremiumTierMaxMessageBytes} (100 MiB, the Premium tier's ceiling; Standard allows {ServiceBusTransportOptions.StandardTierMaxMessageBytes}) (was {o.MaxEventSizeBytes}).");
        }
        if (o.MaxDeliveryCount < 1)
        {
            errors.Add($"{Prefix}:MaxDeliveryCount must be at least 1 (was {o.MaxDeliveryCount}).");
        }
        if (o.LockDuration < TimeSpan.FromSeconds(5) || o.LockDuration > TimeSpan.FromMinutes(5))
        {
            errors.Add($"{Prefix}:LockDuration must be between 00:00:05 and 00:05:00, Service Bus's range (was {o.LockDuration}).");
        }
        if (o.MaxAutoLockRenewalDuration < TimeSpan.Zero)
        {
            errors.Add($"{Prefix}:MaxAutoLockRenewalDuration must not be negative (was {o.MaxAutoLockRenewalDuration}).");
        }
        if (o.ReceiveWaitTime < TimeSpan.FromMilliseconds(100) || o.ReceiveWaitTime > TimeSpan.FromMinutes(5))
        {
            errors.Add($"{Prefix}:ReceiveWaitTime must be between 00:00:00.1 and 00:05:00 (was {o.ReceiveWaitTime}).");
        }
        if (o.MaxMessagesPerReceive is < 1 or > 1000)
        {
            errors.Add($"{Prefix}:MaxMessagesPerReceive must be between 1 and 1000 (was {o.MaxMessagesPerReceive}).");
        }
        if (o.MaxRetries is < 0 or > 100)
        {
            errors.Add($"{Prefix}:MaxRetries must be between 0 and 100 (was {o.MaxRetries}).");
        }
        if (o.RetryDelay <= TimeSpan.Zero || o.RetryDelay > TimeSpan.FromMinutes(5))
        {
            errors.Add($"{Prefix}:RetryDelay must be positive and at most 00:05:00 (was {o.RetryDelay}).");
        }
        if (o.TryTimeout <= TimeSpan.Zero || o.TryTimeout > TimeSpan.FromHours(1))
        {
            errors.Add($"{Prefix}:TryTimeout must be positive and at most 01:00:00 (was {o.TryTimeout}).");
        }
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>What is wrong with a connection string, without echoing its secret.</summary>
    private static string? ConnectionStringProblem(string connectionString)
    {
        var parts = connectionString.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(p => p.Split('=', 2))
            .Where(p => p.Length == 2)
            .ToDictionary(p => p[0], p => p[1], StringComparer.OrdinalIgnoreCase);
        if (!parts.TryGetValue("Endpoint", out var endpoint) || !Uri.TryCreate(endpoint, UriKind.Absolute, out var uri))
        {
            return "has no valid Endpoint=sb://<namespace>/ part.";
        }
        if (uri.Scheme is not ("sb" or "amqps" or "amqp" or "https" or "http"))
        {
            return $"has Endpoint scheme '{uri.Scheme}'; use sb://.";
        }
        var hasKey = parts.ContainsKey("SharedAccessKeyName") && parts.ContainsKey("SharedAccessKey");
        if (!hasKey && !parts.ContainsKey("SharedAccessSignature"))
        {
            return "has neither SharedAccessKeyName with SharedAccessKey nor SharedAccessSignature.";
        }
        return null;
    }
}
