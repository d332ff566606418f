namespace Messaging.LocalAws.Protocol;

/// <summary>
/// An error answered to the client in the shape its protocol expects: SQS (AWS JSON 1.0) puts
/// <see cref="ShapeName"/> in <c>__type</c> and <see cref="Code"/> in the <c>x-amzn-query-error</c>
/// header; SNS (AWS query) puts <see cref="Code"/> in the XML <c>ErrorResponse</c>.
/// </summary>
internal sealed class AwsServiceException : Exception
{
    public AwsServiceException(string shapeName, string code, int statusCode, string message, bool senderFault = true)
        : base(message)
    {
        ShapeName = shapeName;
        Code = code;
        StatusCode = statusCode;
        SenderFault = senderFault;
    }

    /// <summary>The error shape name of the service model (JSON protocol <c>__type</c>).</summary>
    public string ShapeName { get; }

    /// <summary>The query-protocol error code (what the SDKs expose as <c>ErrorCode</c>).</summary>
    public string Code { get; }

    public int StatusCode { get; }

    /// <summary>True when the caller is at fault ("Sender"), false for service faults ("Receiver").</summary>
    public bool SenderFault { get; }

    public static AwsServiceException MissingAuthenticationToken() =>
        new("MissingAuthenticationTokenException", "MissingAuthenticationToken", 403, "Request is missing Authentication Token");

    public static AwsServiceException IncompleteSignature(string message) =>
        new("IncompleteSignatureException", "IncompleteSignature", 400, message);

    public static AwsServiceException SignatureDoesNotMatch(string message) =>
        new("InvalidSignatureException", "SignatureDoesNotMatch", 403, message);

    /// <summary>The common error of every AWS API when the service cannot take the request; the SDKs retry it.</summary>
    public static AwsServiceException ServiceUnavailable() =>
        new("ServiceUnavailable", "ServiceUnavailable", 503, "The request has failed due to a temporary failure of the server.", senderFault: false);
}
