using System.Text;
using System.Text.Json;
using System.Xml.Linq;
using Messaging.LocalAws.Protocol;
using Messaging.LocalAws.Sns;
using Messaging.LocalAws.Sqs;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Messaging.LocalAws;

/// <summary>
/// One URL serves both services, told apart as AWS's own SDKs shape them: SQS requests carry
/// <c>X-Amz-Target: AmazonSQS.&lt;Action&gt;</c> with an AWS JSON 1.0 body; SNS requests are form posts in the
/// query protocol (<c>Action=...&amp;Version=2010-03-31</c>).
/// </summary>
internal sealed partial class AwsRequestRouter(LocalAwsContext context, SqsJsonApi sqs, SnsQueryApi sns, RequestRefusals refusals)
{
    private const string JsonContentType = "application/x-amz-json-1.0";
    private const string SqsTargetPrefix = "AmazonSQS.";
    private const string SqsQueryApiVersion = "2012-11-05";

    private readonly ILogger _logger = context.LoggerFactory.CreateLogger<AwsRequestRouter>();

    public async Task HandleAsync(HttpContext http, CancellationToken outage)
    {
        var requestId = Guid.NewGuid().ToString();
        http.Response.Headers["x-amzn-RequestId"] = requestId;
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted, outage);
        try
        {
            if (http.Request.Headers.ContainsKey("X-Amz-Target"))
            {
                await HandleSqsAsync(http, linked.Token, outage).ConfigureAwait(false);
            }
            else
            {
                await HandleQueryAsync(http, requestId, linked.Token).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (outage.IsCancellationRequested)
        {
            // A simulated outage drops open connections (long polls included) the way a dead endpoint would.
            http.Abort();
        }
        catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested)
        {
            // The client went away; nobody reads the answer.
        }
    }

    /// <summary>
    /// <paramref name="cancellationToken"/> (client gone or outage) governs reading the request and writing the answer;
    /// the operation itself ends early only in an outage: SQS keeps a long poll whose client went away.
    /// </summary>
    private async Task HandleSqsAsync(HttpContext http, CancellationToken cancellationToken, CancellationToken outage)
    {
        string action = string.Empty;
        try
        {
            // Authentication comes first, as on AWS: an unsigned request learns nothing about operations.
            SigV4AuthorizationCheck.Validate(http.Request, null, "sqs", context.Region);
            string target = http.Request.Headers["X-Amz-Target"].ToString();
            if (!target.StartsWith(SqsTargetPrefix, StringComparison.Ordinal) || !SqsJsonApi.Actions.Contains(target[SqsTargetPrefix.Length..]))
            {
                throw SqsErrors.UnknownOperation(target);
            }

            action = target[SqsTargetPrefix.Length..];
            refusals.ThrowIfRefused("sqs", action);
            if (http.Request.ContentType is not { } contentType || !contentType.StartsWith(JsonContentType, StringComparison.OrdinalIgnoreCase))
            {
                throw SqsErrors.Serialization($"The request Content-Type must be {JsonContentType}, got '{http.Request.ContentType}'.");
            }

            JsonDocument document;
            try
            {
                document = await JsonDocument.ParseAsync(http.Request.Body, cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            catch (JsonException error)
            {
                throw SqsErrors.Serialization($"The request body is not valid JSON: {error.Message}");
            }

            using (document)
            {
                var body = await sqs.InvokeAsync(action, document.RootElement, http.RequestAborted, outage).ConfigureAwait(false);
                http.Response.StatusCode = StatusCodes.Status200OK;
                http.Response.ContentType = JsonContentType;
                await http.Response.Body.WriteAsync(body, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (AwsServiceException error)
        {
            LogRequestFailed("SQS", action, error.Code, error.Message);
            await WriteSqsErrorAsync(http, error, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception error) when (error is not OperationCanceledException)
        {
            LogInternalFailure(error, "SQS", action);
            await WriteSqsErrorAsync(http, new AwsServiceException("InternalFailure", "InternalFailure", 500, error.Message, senderFault: false), cancellationToken).ConfigureAwait(false);
        }
    }

    private static async Task WriteSqsErrorAsync(HttpContext http, AwsServiceException error, CancellationToken cancellationToken)
    {
        http.Response.StatusCode = error.StatusCode;
        http.Response.ContentType = JsonContentType;
        http.Response.Headers["x-amzn-query-error"] = $"{error.Code};{(error.SenderFault ? "Sender" : "Receiver")}";
        var body = JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, string>
        {
            ["__type"] = $"com.amazonaws.sqs#{error.ShapeName}",
            ["message"] = error.Message,
        });
        await http.Response.Body.WriteAsync(body, cancellationToken).ConfigureAwait(false);
    }

    private async Task HandleQueryAsync(HttpContext http, string requestId, CancellationToken cancellationToken)
    {
        string? action = null;
        try
        {
            if (!http.Request.HasFormContentType)
            {
                throw new AwsServiceException("MissingAction", "MissingAction", 400,
                    "The request names no operation: SQS requests need an X-Amz-Target header (AWS JSON 1.0), SNS requests a form-encoded Action parameter.");
            }

            var form = await http.Request.ReadFormAsync(cancellationToken).ConfigureAwait(false);
            var parameters = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var (key, value) in form)
            {
                parameters[key] = value.ToString();
            }

            SigV4AuthorizationCheck.Validate(http.Request, parameters, "sns", context.Region);
            action = parameters.GetValueOrDefault("Action");
            refusals.ThrowIfRefused("sns", action);
            var version = parameters.GetValueOrDefault("Version");
            if (string.IsNullOrEmpty(action))
            {
                throw new AwsServiceException("MissingAction", "MissingAction", 400, "The request must contain the parameter Action.");
            }

            if (version == SqsQueryApiVersion)
            {
                throw SnsErrors.InvalidAction(
                    $"{action} (SQS query protocol, Version {SqsQueryApiVersion}): this endpoint serves SQS in the AWS JSON 1.0 protocol only, as AWSSDK.SQS 4.x speaks it");
            }

            if (version is not null && version != SnsQueryApi.ApiVersion)
            {
                throw new AwsServiceException("InvalidParameterValue", "InvalidParameterValue", 400,
                    $"Version '{version}' is not supported; SNS requests use Version {SnsQueryApi.ApiVersion}.");
            }

            var response = sns.Invoke(action, parameters, requestId);
            await WriteXmlAsync(http, StatusCodes.Status200OK, response, cancellationToken).ConfigureAwait(false);
        }
        catch (AwsServiceException error)
        {
            LogRequestFailed("SNS", action ?? string.Empty, error.Code, error.Message);
            await WriteXmlAsync(http, error.StatusCode, SnsQueryApi.Error(error, requestId), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception error) when (error is not OperationCanceledException)
        {
            LogInternalFailure(error, "SNS", action ?? string.Empty);
            var failure = new AwsServiceException("InternalFailure", "InternalFailure", 500, error.Message, senderFault: false);
            await WriteXmlAsync(http, failure.StatusCode, SnsQueryApi.Error(failure, requestId), cancellationToken).ConfigureAwait(false);
        }
    }

    private static async Task WriteXmlAsync(HttpContext http, int statusCode, XElement element, CancellationToken cancellationToken)
    {
        http.Response.StatusCode = statusCode;
        http.Response.ContentType = "text/xml";
        var body = Encoding.UTF8.GetBytes(new XDocument(new XDeclaration("1.0", "utf-8", null), element).Declaration + element.ToString(SaveOptions.DisableFormatting));
        await http.Response.Body.WriteAsync(body, cancellationToken).ConfigureAwait(false);
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "{Service} {Action} failed: {Code}: {Message}")]
    private partial void LogRequestFailed(string service, string action, string code, string message);

    [LoggerMessage(Level = LogLevel.Error, Message = "{Service} {Action} failed unexpectedly")]
    private partial void LogInternalFailure(Exception error, string service, string action);
}
