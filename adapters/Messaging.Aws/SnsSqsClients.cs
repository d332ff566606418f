using Amazon;
using Amazon.Runtime;
using Amazon.Runtime.Credentials;
using Amazon.SQS;
using Messaging.Aws.Sns;

namespace Messaging.Aws;

/// <summary>
/// The SQS client (AWSSDK.SQS) and the SNS client, configured the standard AWS way: credentials from the options or the
/// SDK's default chain, region from the options or the SDK's region chain, endpoints from the service URL overrides or
/// the regional AWS endpoints.
/// </summary>
internal sealed class SnsSqsClients : IDisposable
{
    public SnsSqsClients(SnsSqsTransportOptions options, ISnsClient? sns = null)
    {
        Region = ResolveRegion(options);
        Credentials = ResolveCredentials(options);
        var sqsUrl = options.SqsServiceUrl ?? options.ServiceUrl;
        AmazonSQSConfig SqsConfig(int retries)
        {
            var config = new AmazonSQSConfig
            {
                MaxErrorRetry = retries,
                // Long polls last WaitTimeSeconds; the HTTP timeout must outlast them.
                Timeout = options.RequestTimeout + TimeSpan.FromSeconds(options.WaitTimeSeconds),
            };
            if (sqsUrl is not null)
            {
                config.ServiceURL = sqsUrl;
                config.AuthenticationRegion = Region;
            }
            else
            {
                config.RegionEndpoint = RegionEndpoint.GetBySystemName(Region);
            }
            return config;
        }
        Sqs = new AmazonSQSClient(Credentials, SqsConfig(options.MaxRetries));
        // Receive loops retry on their own, with a bounded backoff and a Warning: the SDK's own retries (up to MaxRetries,
        // with backoffs of up to 20 s) would only hide an outage for a minute before anyone hears of it.
        SqsReceive = new AmazonSQSClient(Credentials, SqsConfig(Math.Min(options.MaxRetries, 1)));
        var snsUrl = options.SnsServiceUrl ?? options.ServiceUrl;
        SnsEndpoint = new Uri(snsUrl ?? $"https://sns.{Region}.{DnsSuffix(Region)}/");
        Sns = sns ?? new SnsQueryClient(SnsEndpoint, Region, Credentials, options.MaxRetries, options.RequestTimeout);
        Endpoint = snsUrl == sqsUrl && snsUrl is not null ? snsUrl : $"SNS {SnsEndpoint}, SQS {sqsUrl ?? "sqs." + Region}";
    }

    public string Region { get; }

    public AWSCredentials Credentials { get; }

    public IAmazonSQS Sqs { get; }

    /// <summary>The client the receive loops poll with: one SDK retry at most, the loop does the rest.</summary>
    public IAmazonSQS SqsReceive { get; }

    public ISnsClient Sns { get; }

    public Uri SnsEndpoint { get; }

    /// <summary>Where the transport connects, for error messages.</summary>
    public string Endpoint { get; }

    private static string ResolveRegion(SnsSqsTransportOptions options)
    {
        if (!string.IsNullOrWhiteSpace(options.Region))
        {
            return options.Region;
        }
        var fromChain = FallbackRegionFactory.GetRegionEndpoint()?.SystemName;
        if (!string.IsNullOrEmpty(fromChain))
        {
            return fromChain;
        }
        if (options.ServiceUrl is not null || (options.SqsServiceUrl is not null && options.SnsServiceUrl is not null))
        {
            return "us-east-1"; // local emulators accept any region; this is the one they default to
        }
        throw new InvalidOperationException(
            "No AWS region for the SNS/SQS transport: set Messaging:SnsSqs:Region, or AWS_REGION / AWS_DEFAULT_REGION, or a region in the AWS profile.");
    }

    private static AWSCredentials ResolveCredentials(SnsSqsTransportOptions options)
    {
        if (!string.IsNullOrEmpty(options.AccessKeyId))
        {
            return string.IsNullOrEmpty(options.SessionToken)
                ? new BasicAWSCredentials(options.AccessKeyId, options.SecretAccessKey)
                : new SessionAWSCredentials(options.AccessKeyId, options.SecretAccessKey, options.SessionToken);
        }
        try
        {
            return DefaultAWSCredentialsIdentityResolver.GetCredentials();
        }
        catch (AmazonClientException ex)
        {
            throw new InvalidOperationException(
                "No AWS credentials for the SNS/SQS transport: the default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS profile, web identity, container or instance role) found none. " +
                "For a local emulator set Messaging:SnsSqs:AccessKeyId and SecretAccessKey.", ex);
        }
    }

    private static string DnsSuffix(string region) => region.StartsWith("cn-", StringComparison.Ordinal) ? "amazonaws.com.cn" : "amazonaws.com";

    public void Dispose()
    {
        Sqs.Dispose();
        SqsReceive.Dispose();
        Sns.Dispose();
    }
}
