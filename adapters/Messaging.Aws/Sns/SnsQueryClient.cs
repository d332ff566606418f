using System.Globalization;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Xml.Linq;
using Amazon.Runtime;
using Amazon.Runtime.Internal.Auth;

namespace Messaging.Aws.Sns;

/// <summary>
/// A small SNS client over the AWS Query protocol (form-encoded POST, <c>Version=2010-03-31</c>, XML answers), signed
/// with Signature Version 4 by AWSSDK.Core. It exists because the official SNS package is not available here; it covers
/// only the operations the transport needs. Transient failures (network errors, timeouts, throttling, 5xx) are retried
/// with jittered exponential backoff; every other error is an <see cref="SnsException"/> carrying the AWS error code.
/// </summary>
internal sealed class SnsQueryClient : ISnsClient
{
    private const string ApiVersion = "2010-03-31";
    private const string ServiceName = "sns";
    private const string FormContentType = "application/x-www-form-urlencoded; charset=utf-8";
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(5);

    private readonly HttpClient _http;
    private readonly Uri _endpoint;
    private readonly string _region;
    private readonly AWSCredentials _credentials;
    private readonly int _maxRetries;

    /// <param name="endpoint">The SNS endpoint, e.g. <c>https://sns.eu-west-1.amazonaws.com/</c> or a local emulator.</param>
    /// <param name="region">The region requests are signed for.</param>
    /// <param name="credentials">Credentials; refreshed by the SDK when they are temporary.</param>
    /// <param name="maxRetries">Retries of a request failing transiently.</param>
    /// <param name="requestTimeout">Timeout of one HTTP request.</param>
    /// <param name="handler">The HTTP handler (tests substitute one); owned by the client.</param>
    public SnsQueryClient(Uri endpoint, string region, AWSCredentials credentials, int maxRetries = 5, TimeSpan? requestTimeout = null, HttpMessageHandler? handler = null)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ArgumentException.ThrowIfNullOrWhiteSpace(region);
        ArgumentNullException.ThrowIfNull(credentials);
        ArgumentOutOfRangeException.ThrowIfNegative(maxRetries);
        _endpoint = endpoint;
        _region = region;
        _credentials = credentials;
        _maxRetries = maxRetries;
        _http = new HttpClient(handler ?? new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5) }, disposeHandler: true)
        {
            Timeout = requestTimeout ?? TimeSpan.FromSeconds(30),
        };
    }

    public async Task<string> CreateTopicAsync(string name, CancellationToken cancellationToken)
    {
        var answer = await SendAsync("CreateTopic", [new("Name", name)], cancellationToken).ConfigureAwait(false);
        return Required(answer, "TopicArn", "CreateTopic");
    }

    public async Task<string> CreateFifoTopicAsync(string name, CancellationToken cancellationToken)
    {
        var answer = await SendAsync("CreateTopic",
        [
            new("Name", name),
            new("Attributes.entry.1.key", "FifoTopic"),
            new("Attributes.entry.1.value", "true"),
            new("Attributes.entry.2.key", "ContentBasedDeduplication"),
            new("Attributes.entry.2.value", "false"),
        ], cancellationToken).ConfigureAwait(false);
        return Required(answer, "TopicArn", "CreateTopic");
    }

    public async Task<IReadOnlyDictionary<string, string>?> GetTopicAttributesAsync(string topicArn, CancellationToken cancellationToken)
    {
        XElement answer;
        try
        {
            answer = await SendAsync("GetTopicAttributes", [new("TopicArn", topicArn)], cancellationToken).ConfigureAwait(false);
        }
        catch (SnsException ex) when (ex.ErrorCode == "NotFound")
        {
            return null;
        }
        var attributes = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var entry in answer.Descendants().Where(e => e.Name.LocalName == "entry"))
        {
            if (Child(entry, "key") is { } key)
            {
                attributes[key] = Child(entry, "value") ?? string.Empty;
            }
        }
        return attributes;
    }

    public async Task<string?> FindTopicArnAsync(string name, CancellationToken cancellationToken)
    {
        string? nextToken = null;
        // Bounded: 100 topics a page, so this covers an account's 100 000 standard topics.
        for (var page = 0; page < 1000; page++)
        {
            var parameters = new List<KeyValuePair<string, string>>();
            if (nextToken is not null)
            {
                parameters.Add(new("NextToken", nextToken));
            }
            var answer = await SendAsync("ListTopics", parameters, cancellationToken).ConfigureAwait(false);
            foreach (var arn in answer.Descendants().Where(e => e.Name.LocalName == "TopicArn").Select(e => e.Value))
            {
                if (arn.EndsWith(":" + name, StringComparison.Ordinal))
                {
                    return arn;
                }
            }
            nextToken = Optional(answer, "NextToken");
            if (string.IsNullOrEmpty(nextToken))
            {
                return null;
            }
        }
        return null;
    }

    public async Task<string> SubscribeQueueAsync(string topicArn, string queueArn, bool? rawMessageDelivery, CancellationToken cancellationToken)
    {
        var parameters = new List<KeyValuePair<string, string>>
        {
            new("TopicArn", topicArn),
            new("Protocol", "sqs"),
            new("Endpoint", queueArn),
            new("ReturnSubscriptionArn", "true"),
        };
        if (rawMessageDelivery is { } raw)
        {
            parameters.Add(new("Attributes.entry.1.key", "RawMessageDelivery"));
            parameters.Add(new("Attributes.entry.1.value", raw ? "true" : "false"));
        }
        var answer = await SendAsync("Subscribe", parameters, cancellationToken).ConfigureAwait(false);
        return Required(answer, "SubscriptionArn", "Subscribe");
    }

    public Task SetSubscriptionAttributeAsync(string subscriptionArn, string attributeName, string attributeValue, CancellationToken cancellationToken) =>
        SendAsync("SetSubscriptionAttributes",
        [
            new("SubscriptionArn", subscriptionArn),
            new("AttributeName", attributeName),
            new("AttributeValue", attributeValue),
        ], cancellationToken);

    public async Task<string> PublishAsync(string topicArn, SnsMessage message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        var parameters = new List<KeyValuePair<string, string>> { new("TopicArn", topicArn), new("Message", message.Body) };
        AddAttributes(parameters, "MessageAttributes.entry.", message.Attributes);
        AddFifoIds(parameters, string.Empty, message);
        var answer = await SendAsync("Publish", parameters, cancellationToken).ConfigureAwait(false);
        return Required(answer, "MessageId", "Publish");
    }

    public async Task<IReadOnlyList<SnsBatchFailure>> PublishBatchAsync(string topicArn, IReadOnlyList<SnsBatchEntry> entries, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entries);
        if (entries.Count is < 1 or > 10)
        {
            throw new ArgumentOutOfRangeException(nameof(entries), entries.Count, "SNS PublishBatch takes 1 to 10 entries.");
        }
        var parameters = new List<KeyValuePair<string, string>> { new("TopicArn", topicArn) };
        for (var i = 0; i < entries.Count; i++)
        {
            var prefix = string.Create(CultureInfo.InvariantCulture, $"PublishBatchRequestEntries.member.{i + 1}.");
            parameters.Add(new(prefix + "Id", entries[i].Id));
            parameters.Add(new(prefix + "Message", entries[i].Message.Body));
            AddAttributes(parameters, prefix + "MessageAttributes.entry.", entries[i].Message.Attributes);
            AddFifoIds(parameters, prefix, entries[i].Message);
        }
        var answer = await SendAsync("PublishBatch", parameters, cancellationToken).ConfigureAwait(false);
        var failed = answer.Descendants().FirstOrDefault(e => e.Name.LocalName == "Failed");
        if (failed is null)
        {
            return [];
        }
        return failed.Elements().Where(e => e.Name.LocalName == "member").Select(m => new SnsBatchFailure(
            Child(m, "Id") ?? string.Empty,
            Child(m, "Code") ?? "Unknown",
            Child(m, "Message"),
            !string.Equals(Child(m, "SenderFault"), "false", StringComparison.OrdinalIgnoreCase))).ToList();
    }

    public Task UnsubscribeAsync(string subscriptionArn, CancellationToken cancellationToken) =>
        SendAsync("Unsubscribe", [new("SubscriptionArn", subscriptionArn)], cancellationToken);

    public Task DeleteTopicAsync(string topicArn, CancellationToken cancellationToken) =>
        SendAsync("DeleteTopic", [new("TopicArn", topicArn)], cancellationToken);

    private static void AddFifoIds(List<KeyValuePair<string, string>> parameters, string prefix, SnsMessage message)
    {
        if (message.GroupId is { } group)
        {
            parameters.Add(new(prefix + "MessageGroupId", group));
        }
        if (message.DeduplicationId is { } deduplication)
        {
            parameters.Add(new(prefix + "MessageDeduplicationId", deduplication));
        }
    }

    private static void AddAttributes(List<KeyValuePair<string, string>> parameters, string prefix, IReadOnlyList<KeyValuePair<string, string>> attributes)
    {
        for (var i = 0; i < attributes.Count; i++)
        {
            var entry = string.Create(CultureInfo.InvariantCulture, $"{prefix}{i + 1}.");
            parameters.Add(new(entry + "Name", attributes[i].Key));
            parameters.Add(new(entry + "Value.DataType", "String"));
            parameters.Add(new(entry + "Value.StringValue", attributes[i].Value));
        }
    }

    /// <summary>Sends one action, retrying transient failures; returns the parsed XML answer.</summary>
    private async Task<XElement> SendAsync(string action, IReadOnlyList<KeyValuePair<string, string>> parameters, CancellationToken cancellationToken)
    {
        var body = Encoding.UTF8.GetBytes(FormEncode(action, parameters));
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                return await SendOnceAsync(action, body, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (attempt < _maxRetries && !cancellationToken.IsCancellationRequested && IsTransient(ex))
            {
                var backoff = TimeSpan.FromMilliseconds(Math.Min(MaxBackoff.TotalMilliseconds, 100 * Math.Pow(2, attempt)) * (0.5 + Random.Shared.NextDouble() / 2));
                await Task.Delay(backoff, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private static bool IsTransient(Exception ex) => ex switch
    {
        SnsException sns => sns.IsTransient,
        HttpRequestException => true,
        TaskCanceledException => true, // the request timed out (the caller's own cancellation is excluded by the filter)
        IOException => true,
        _ => false,
    };

    private async Task<XElement> SendOnceAsync(string action, byte[] body, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, _endpoint) { Content = new ByteArrayContent(body) };
        request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(FormContentType);
        var credentials = await _credentials.GetCredentialsAsync().ConfigureAwait(false);
        Sign(request, body, credentials, DateTime.UtcNow);
        using var response = await _http.SendAsync(request, cancellationToken).ConfigureAwait(false);
        var text = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        XElement? root = null;
        try
        {
            root = string.IsNullOrWhiteSpace(text) ? null : XDocument.Parse(text).Root;
        }
        catch (System.Xml.XmlException) when (!response.IsSuccessStatusCode)
        {
            // An error page that is not XML (a proxy, a load balancer): reported below with the status code.
        }
        if (response.IsSuccessStatusCode && root is not null)
        {
            return root;
        }
        var status = (int)response.StatusCode;
        var error = root?.Descendants().FirstOrDefault(e => e.Name.LocalName == "Error");
        var code = (error is null ? null : Child(error, "Code")) ?? (status >= 500 ? "InternalFailure" : "Unknown");
        var message = (error is null ? null : Child(error, "Message")) ?? Truncate(text);
        var requestId = root is null ? null : Optional(root, "RequestId");
        throw new SnsException($"SNS {action} failed with {code} (HTTP {status}): {message}", code, status, requestId);
    }

    /// <summary>Adds the Signature Version 4 headers. The canonical request is built here; key derivation and the signature come from AWSSDK.Core.</summary>
    internal void Sign(HttpRequestMessage request, byte[] body, ImmutableCredentials credentials, DateTime signedAt)
    {
        var amzDate = signedAt.ToString("yyyyMMdd'T'HHmmss'Z'", CultureInfo.InvariantCulture);
        var host = _endpoint.IsDefaultPort ? _endpoint.Host : _endpoint.Authority;
        var headers = new SortedDictionary<string, string>(StringComparer.Ordinal)
        {
            ["content-type"] = FormContentType,
            ["host"] = host,
            ["x-amz-date"] = amzDate,
        };
        if (credentials.UseToken)
        {
            headers["x-amz-security-token"] = credentials.Token;
        }
        var signedHeaders = string.Join(';', headers.Keys);
        var canonical = new StringBuilder()
            .Append("POST\n")
            .Append(string.IsNullOrEmpty(_endpoint.AbsolutePath) ? "/" : _endpoint.AbsolutePath).Append('\n')
            .Append('\n'); // no query string
        foreach (var (name, value) in headers)
        {
            canonical.Append(name).Append(':').Append(value.Trim()).Append('\n');
        }
        canonical.Append('\n').Append(signedHeaders).Append('\n').Append(Convert.ToHexStringLower(SHA256.HashData(body)));
        var signature = AWS4Signer.ComputeSignature(credentials, _region, signedAt, ServiceName, signedHeaders, canonical.ToString());
        request.Headers.TryAddWithoutValidation("X-Amz-Date", amzDate);
        if (credentials.UseToken)
        {
            request.Headers.TryAddWithoutValidation("X-Amz-Security-Token", credentials.Token);
        }
        request.Headers.TryAddWithoutValidation("Authorization", signature.ForAuthorizationHeader);
    }

    internal static string FormEncode(string action, IReadOnlyList<KeyValuePair<string, string>> parameters)
    {
        var form = new StringBuilder("Action=").Append(Uri.EscapeDataString(action)).Append("&Version=").Append(ApiVersion);
        foreach (var (key, value) in parameters)
        {
            form.Append('&').Append(Uri.EscapeDataString(key)).Append('=').Append(Uri.EscapeDataString(value));
        }
        return form.ToString();
    }

    private static string Required(XElement answer, string element, string action) =>
        Optional(answer, element) ?? throw new SnsException($"SNS {action} answered without {element}.", "MalformedResponse", 200, Optional(answer, "RequestId"));

    private static string? Optional(XElement answer, string element) =>
        answer.Descendants().FirstOrDefault(e => e.Name.LocalName == element)?.Value;

    private static string? Child(XElement parent, string element) =>
        parent.Elements().FirstOrDefault(e => e.Name.LocalName == element)?.Value;

    private static string Truncate(string text) => text.Length <= 300 ? text : text[..300] + "...";

    public void Dispose() => _http.Dispose();
}
