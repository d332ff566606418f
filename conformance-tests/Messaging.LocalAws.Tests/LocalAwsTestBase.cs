using Amazon.Runtime;
using Amazon.SQS;

namespace Messaging.LocalAws.Tests;

/// <summary>A fresh endpoint per test, with the real AWS SDK SQS client and a query-protocol SNS client pointed at it.</summary>
public abstract class LocalAwsTestBase : IAsyncLifetime
{
    protected LocalAwsEndpoint Endpoint { get; private set; } = null!;
    protected AmazonSQSClient Sqs { get; private set; } = null!;
    protected SnsQueryClient Sns { get; private set; } = null!;
    protected static CancellationToken Cancellation => TestContext.Current.CancellationToken;

    public async ValueTask InitializeAsync()
    {
        Endpoint = await LocalAwsEndpoint.StartAsync(cancellationToken: Cancellation);
        Sqs = CreateSqsClient(Endpoint);
        Sns = new SnsQueryClient(Endpoint.ServiceUrl, Endpoint.Region);
    }

    public async ValueTask DisposeAsync()
    {
        Sqs.Dispose();
        Sns.Dispose();
        await Endpoint.DisposeAsync();
        GC.SuppressFinalize(this);
    }

    protected static AmazonSQSClient CreateSqsClient(LocalAwsEndpoint endpoint) =>
        new(new BasicAWSCredentials("test", "test"), new AmazonSQSConfig
        {
            ServiceURL = endpoint.ServiceUrl.ToString(),
            AuthenticationRegion = endpoint.Region,
            MaxErrorRetry = 0,
        });

    /// <summary>Polls <paramref name="probe"/> until it yields a value or the deadline passes; never a fixed sleep.</summary>
    protected static async Task<T> EventuallyAsync<T>(Func<Task<T?>> probe, TimeSpan timeout, string what)
        where T : class
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (await probe() is { } value)
            {
                return value;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(50), Cancellation);
        }

        throw new TimeoutException($"Timed out after {timeout} waiting for {what}.");
    }
}
