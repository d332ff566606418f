using Amazon.Runtime;
using Amazon.SQS;
using Microsoft.Extensions.Logging;

namespace Messaging.LocalAws.Tests;

/// <summary>A fresh endpoint per test, with the real AWS SDK SQS client and a query-protocol SNS client pointed at it.</summary>
public abstract class LocalAwsTestBase : IAsyncLifetime
{
    private ILoggerFactory _loggerFactory = null!;

    protected LocalAwsEndpoint Endpoint { get; private set; } = null!;
    protected AmazonSQSClient Sqs { get; private set; } = null!;
    protected SnsQueryClient Sns { get; private set; } = null!;
    protected static CancellationToken Cancellation => TestContext.Current.CancellationToken;

    /// <summary>The endpoint's clock: the system's unless a test class moves its own.</summary>
    protected virtual TimeProvider Time => TimeProvider.System;

    /// <summary>What the endpoint logs at Information and above.</summary>
    protected CapturingLoggerProvider Logs { get; } = new();

    public async ValueTask InitializeAsync()
    {
        _loggerFactory = LoggerFactory.Create(logging => logging.AddProvider(Logs).SetMinimumLevel(LogLevel.Information));
        Endpoint = await LocalAwsEndpoint.StartAsync(new LocalAwsEndpointOptions { LoggerFactory = _loggerFactory, TimeProvider = Time }, Cancellation);
        Sqs = CreateSqsClient(Endpoint);
        Sns = new SnsQueryClient(Endpoint.ServiceUrl, Endpoint.Region);
    }

    public async ValueTask DisposeAsync()
    {
        Sqs.Dispose();
        Sns.Dispose();
        await Endpoint.DisposeAsync();
        _loggerFactory.Dispose();
        GC.SuppressFinalize(this);
    }

    protected static AmazonSQSClient CreateSqsClient(LocalAwsEndpoint endpoint) =>
        new(new BasicAWSCredentials("test", "test"), new AmazonSQSConfig
        {
            ServiceURL = endpoint.ServiceUrl.ToString(),
            AuthenticationRegion = endpoint.Region,
            MaxErrorRetry = 0,
        });
}
