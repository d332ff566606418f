using System.Globalization;
using System.Net;
using System.Xml.Linq;

namespace Messaging.LocalAws.Tests;

/// <summary>
/// Form posts in the SNS query protocol with a SigV4-shaped Authorization header (the endpoint checks the
/// shape and the credential scope, not the signature).
/// </summary>
public sealed class SnsQueryClient(Uri serviceUrl, string region) : IDisposable
{
    public static readonly XNamespace Ns = "http://sns.amazonaws.com/doc/2010-03-31/";

    private readonly HttpClient _http = new() { BaseAddress = serviceUrl, Timeout = TimeSpan.FromSeconds(10) };

    public async Task<SnsResponse> SendAsync(string action, IEnumerable<KeyValuePair<string, string>> parameters, string? authorization = "sns", CancellationToken cancellationToken = default)
    {
        var form = new List<KeyValuePair<string, string>> { new("Action", action), new("Version", "2010-03-31") };
        form.AddRange(parameters);
        using var request = new HttpRequestMessage(HttpMethod.Post, "/") { Content = new FormUrlEncodedContent(form) };
        if (authorization is not null)
        {
            var now = DateTime.UtcNow;
            request.Headers.Add("X-Amz-Date", now.ToString("yyyyMMdd'T'HHmmss'Z'", CultureInfo.InvariantCulture));
            request.Headers.TryAddWithoutValidation("Authorization",
                $"AWS4-HMAC-SHA256 Credential=test/{now:yyyyMMdd}/{region}/{authorization}/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature={new string('0', 64)}");
        }

        using var response = await _http.SendAsync(request, cancellationToken);
        var body = await response.Content.ReadAsStringAsync(cancellationToken);
        return new SnsResponse(response.StatusCode, XDocument.Parse(body).Root!);
    }

    public async Task<string> CreateTopicAsync(string name, CancellationToken cancellationToken = default) =>
        (await SendAsync("CreateTopic", [new("Name", name)], cancellationToken: cancellationToken)).Ok().Value("TopicArn");

    public async Task<string> SubscribeAsync(string topicArn, string queueArn, bool raw, CancellationToken cancellationToken = default) =>
        (await SendAsync("Subscribe",
        [
            new("TopicArn", topicArn), new("Protocol", "sqs"), new("Endpoint", queueArn),
            new("Attributes.entry.1.key", "RawMessageDelivery"), new("Attributes.entry.1.value", raw ? "true" : "false"),
        ], cancellationToken: cancellationToken)).Ok().Value("SubscriptionArn");

    public void Dispose() => _http.Dispose();
}

public sealed record SnsResponse(HttpStatusCode StatusCode, XElement Root)
{
    public SnsResponse Ok()
    {
        Assert.True(StatusCode == HttpStatusCode.OK, $"Expected 200, got {(int)StatusCode}: {Root}");
        return this;
    }

    public string Value(string elementName) =>
        Root.Descendants(SnsQueryClient.Ns + elementName).FirstOrDefault()?.Value
        ?? throw new InvalidOperationException($"No <{elementName}> in {Root}");

    public string? ErrorCode => Root.Name == SnsQueryClient.Ns + "ErrorResponse" ? Value("Code") : null;
}
