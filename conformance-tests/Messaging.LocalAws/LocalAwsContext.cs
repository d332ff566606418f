using Microsoft.Extensions.Logging;

namespace Messaging.LocalAws;

/// <summary>What the SQS and SNS halves share: identity of the simulated account and how to address it.</summary>
internal sealed class LocalAwsContext(string region, string accountId, TimeProvider timeProvider, ILoggerFactory loggerFactory)
{
    private Uri? _serviceUrl;

    public string Region { get; } = region;
    public string AccountId { get; } = accountId;
    public TimeProvider Time { get; } = timeProvider;
    public ILoggerFactory LoggerFactory { get; } = loggerFactory;

    /// <summary>Known once the listener has bound its port; the port stays the same across restarts.</summary>
    public Uri ServiceUrl
    {
        get => _serviceUrl ?? throw new InvalidOperationException("The endpoint has not bound its port yet.");
        set => _serviceUrl = value;
    }

    public DateTimeOffset Now => Time.GetUtcNow();
}
