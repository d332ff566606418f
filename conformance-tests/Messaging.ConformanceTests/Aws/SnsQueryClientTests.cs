using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using Amazon.Runtime;
using Messaging.Aws.Sns;

namespace Messaging.ConformanceTests.Aws;

/// <summary>The SNS query-protocol client against a scripted HTTP handler: request shape, signature, answers and errors.</summary>
public sealed class SnsQueryClientTests
{
    private const string Namespace = "http://sns.amazonaws.com/doc/2010-03-31/";
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private sealed class ScriptedHandler(params (HttpStatusCode Status, string Body)[] answers) : HttpMessageHandler
    {
        private int _next;

        public List<(HttpRequestMessage Request, string Body)> Requests { get; } = [];

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Requests.Add((request, await request.Content!.ReadAsStringAsync(cancellationToken)));
            var (status, body) = answers[Math.Min(_next++, answers.Length - 1)];
            return new HttpResponseMessage(status) { Content = new StringContent(body, Encoding.UTF8, "text/xml") };
        }
    }

    private static SnsQueryClient Client(ScriptedHandler handler, AWSCredentials? credentials = null) =>
        new(new Uri("http://127.0.0.1:4566/"), "eu-west-1", credentials ?? new BasicAWSCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), maxRetries: 2, handler: handler);

    private static Dictionary<string, string> Form(string body) => body.Split('&')
        .Select(p => p.Split('=', 2))
        .ToDictionary(p => Uri.UnescapeDataString(p[0]), p => Uri.UnescapeDataString(p[1]));

    [Fact]
    public async Task Publish_sends_a_form_with_attributes_and_returns_the_message_id()
    {
        var handler = new ScriptedHandler((HttpStatusCode.OK,
            $"<PublishResponse xmlns=\"{Namespace}\"><PublishResult><MessageId>mid-1</MessageId></PublishResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></PublishResponse>"));
        using var client = Client(handler);
        var id = await client.PublishAsync("arn:aws:sns:eu-west-1:123456789012:orders",
            new SnsMessage("héllo & bye=1", [new("ce_id", "a b"), new("content-type", "text/plain")]), Ct);
        Assert.Equal("mid-1", id);
        var (request, body) = Assert.Single(handler.Requests);
        Assert.Equal(HttpMethod.Post, request.Method);
        Assert.Equal("application/x-www-form-urlencoded; charset=utf-8", request.Content!.Headers.ContentType!.ToString());
        var form = Form(body);
        Assert.Equal("Publish", form["Action"]);
        Assert.Equal("2010-03-31", form["Version"]);
        Assert.Equal("héllo & bye=1", form["Message"]);
        Assert.Equal("ce_id", form["MessageAttributes.entry.1.Name"]);
        Assert.Equal("String", form["MessageAttributes.entry.1.Value.DataType"]);
        Assert.Equal("a b", form["MessageAttributes.entry.1.Value.StringValue"]);
        Assert.Equal("content-type", form["MessageAttributes.entry.2.Name"]);
    }

    [Fact]
    public async Task Requests_carry_a_valid_signature_version_4()
    {
        var handler = new ScriptedHandler((HttpStatusCode.OK,
            $"<CreateTopicResponse xmlns=\"{Namespace}\"><CreateTopicResult><TopicArn>arn:aws:sns:eu-west-1:123456789012:t</TopicArn></CreateTopicResult></CreateTopicResponse>"));
        using var client = Client(handler, new SessionAWSCredentials("AKIDEXAMPLE", "secret-key", "session-token"));
        await client.CreateTopicAsync("t", Ct);
        var (request, body) = Assert.Single(handler.Requests);
        var amzDate = request.Headers.GetValues("X-Amz-Date").Single();
        Assert.Equal("session-token", request.Headers.GetValues("X-Amz-Security-Token").Single());
        var authorization = request.Headers.GetValues("Authorization").Single();
        var date = amzDate[..8];
        Assert.StartsWith($"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{date}/eu-west-1/sns/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature=",
            authorization, StringComparison.Ordinal);

        // Recompute the signature independently, from the request as sent.
        var canonical = "POST\n/\n\n" +
            "content-type:application/x-www-form-urlencoded; charset=utf-8\n" +
            "host:127.0.0.1:4566\n" +
            $"x-amz-date:{amzDate}\n" +
            "x-amz-security-token:session-token\n\n" +
            "content-type;host;x-amz-date;x-amz-security-token\n" +
            Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(body)));
        var stringToSign = $"AWS4-HMAC-SHA256\n{amzDate}\n{date}/eu-west-1/sns/aws4_request\n{Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(canonical)))}";
        var key = Encoding.UTF8.GetBytes("AWS4secret-key");
        foreach (var part in new[] { date, "eu-west-1", "sns", "aws4_request" })
        {
            key = HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(part));
        }
        var expected = Convert.ToHexStringLower(HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(stringToSign)));
        Assert.EndsWith("Signature=" + expected, authorization, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_error_answer_becomes_an_SnsException_with_the_aws_code()
    {
        var handler = new ScriptedHandler((HttpStatusCode.NotFound,
            $"<ErrorResponse xmlns=\"{Namespace}\"><Error><Type>Sender</Type><Code>NotFound</Code><Message>Topic does not exist</Message></Error><RequestId>req-9</RequestId></ErrorResponse>"));
        using var client = Client(handler);
        var error = await Assert.ThrowsAsync<SnsException>(() => client.PublishAsync("arn:aws:sns:eu-west-1:1:missing", new SnsMessage("x", []), Ct));
        Assert.Equal("NotFound", error.ErrorCode);
        Assert.Equal(404, error.StatusCode);
        Assert.Equal("req-9", error.RequestId);
        Assert.False(error.IsTransient);
        Assert.Contains("Topic does not exist", error.Message, StringComparison.Ordinal);
        Assert.Single(handler.Requests); // not retried
    }

    [Fact]
    public async Task Throttling_and_server_errors_are_retried_then_succeed()
    {
        var handler = new ScriptedHandler(
            (HttpStatusCode.BadRequest, $"<ErrorResponse xmlns=\"{Namespace}\"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>"),
            (HttpStatusCode.ServiceUnavailable, "upstream unavailable"),
            (HttpStatusCode.OK, $"<PublishResponse xmlns=\"{Namespace}\"><PublishResult><MessageId>ok</MessageId></PublishResult></PublishResponse>"));
        using var client = Client(handler);
        Assert.Equal("ok", await client.PublishAsync("arn:aws:sns:eu-west-1:1:t", new SnsMessage("x", []), Ct));
        Assert.Equal(3, handler.Requests.Count);
    }

    [Fact]
    public async Task Publish_batch_numbers_entries_and_reports_failed_ones()
    {
        var handler = new ScriptedHandler((HttpStatusCode.OK, $"""
            <PublishBatchResponse xmlns="{Namespace}"><PublishBatchResult>
              <Successful><member><Id>0</Id><MessageId>m0</MessageId></member></Successful>
              <Failed><member><Id>1</Id><Code>InternalError</Code><Message>try again</Message><SenderFault>false</SenderFault></member></Failed>
            </PublishBatchResult></PublishBatchResponse>
            """));
        using var client = Client(handler);
        var failures = await client.PublishBatchAsync("arn:aws:sns:eu-west-1:1:t",
            [new SnsBatchEntry("0", new SnsMessage("a", [new("k", "v")])), new SnsBatchEntry("1", new SnsMessage("b", []))], Ct);
        var failure = Assert.Single(failures);
        Assert.Equal(("1", "InternalError", false), (failure.Id, failure.Code, failure.SenderFault));
        var form = Form(handler.Requests.Single().Body);
        Assert.Equal("PublishBatch", form["Action"]);
        Assert.Equal("0", form["PublishBatchRequestEntries.member.1.Id"]);
        Assert.Equal("a", form["PublishBatchRequestEntries.member.1.Message"]);
        Assert.Equal("k", form["PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Name"]);
        Assert.Equal("b", form["PublishBatchRequestEntries.member.2.Message"]);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => client.PublishBatchAsync("arn", Enumerable.Range(0, 11).Select(i => new SnsBatchEntry($"{i}", new SnsMessage("x", []))).ToList(), Ct));
    }

    [Fact]
    public async Task Subscribe_asks_for_raw_delivery_and_returns_the_subscription_arn()
    {
        var handler = new ScriptedHandler((HttpStatusCode.OK,
            $"<SubscribeResponse xmlns=\"{Namespace}\"><SubscribeResult><SubscriptionArn>arn:aws:sns:eu-west-1:1:t:abc</SubscriptionArn></SubscribeResult></SubscribeResponse>"));
        using var client = Client(handler);
        Assert.Equal("arn:aws:sns:eu-west-1:1:t:abc", await client.SubscribeQueueAsync("arn:aws:sns:eu-west-1:1:t", "arn:aws:sqs:eu-west-1:1:q", true, Ct));
        var form = Form(handler.Requests.Single().Body);
        Assert.Equal(("sqs", "arn:aws:sqs:eu-west-1:1:q"), (form["Protocol"], form["Endpoint"]));
        Assert.Equal(("RawMessageDelivery", "true"), (form["Attributes.entry.1.key"], form["Attributes.entry.1.value"]));
    }

    [Fact]
    public async Task Find_topic_follows_list_pages()
    {
        var handler = new ScriptedHandler(
            (HttpStatusCode.OK, $"<ListTopicsResponse xmlns=\"{Namespace}\"><ListTopicsResult><Topics><member><TopicArn>arn:aws:sns:eu-west-1:1:other</TopicArn></member></Topics><NextToken>p2</NextToken></ListTopicsResult></ListTopicsResponse>"),
            (HttpStatusCode.OK, $"<ListTopicsResponse xmlns=\"{Namespace}\"><ListTopicsResult><Topics><member><TopicArn>arn:aws:sns:eu-west-1:1:orders</TopicArn></member></Topics></ListTopicsResult></ListTopicsResponse>"));
        using var client = Client(handler);
        Assert.Equal("arn:aws:sns:eu-west-1:1:orders", await client.FindTopicArnAsync("orders", Ct));
        Assert.Equal("p2", Form(handler.Requests[1].Body)["NextToken"]);
        Assert.Null(await client.FindTopicArnAsync("nothing", Ct));
    }
}
