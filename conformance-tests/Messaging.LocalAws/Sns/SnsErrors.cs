using Messaging.LocalAws.Protocol;

namespace Messaging.LocalAws.Sns;

/// <summary>SNS errors with the query-protocol codes and HTTP statuses of the SNS API reference.</summary>
internal static class SnsErrors
{
    public static AwsServiceException NotFound(string message) => new("NotFoundException", "NotFound", 404, message);

    public static AwsServiceException TopicNotFound() => NotFound("Topic does not exist");

    public static AwsServiceException SubscriptionNotFound() => NotFound("Subscription does not exist");

    public static AwsServiceException InvalidParameter(string message) =>
        new("InvalidParameterException", "InvalidParameter", 400, $"Invalid parameter: {message}");

    public static AwsServiceException InvalidParameterValue(string message) =>
        new("InvalidParameterValueException", "InvalidParameterValue", 400, message);

    public static AwsServiceException MissingParameter(string parameter) =>
        new("MissingParameterException", "MissingParameter", 400, $"The request must contain the parameter {parameter}.");

    public static AwsServiceException InvalidAction(string? action) =>
        new("InvalidActionException", "InvalidAction", 400, $"The action {action} is not valid for this web service.");

    public static AwsServiceException EmptyBatchRequest() =>
        new("EmptyBatchRequestException", "EmptyBatchRequest", 400, "The batch request doesn't contain any entries.");

    public static AwsServiceException TooManyEntriesInBatchRequest(int count) =>
        new("TooManyEntriesInBatchRequestException", "TooManyEntriesInBatchRequest", 400,
            $"The batch request contains more entries than permissible: {count} (at most 10).");

    public static AwsServiceException BatchEntryIdsNotDistinct(string id) =>
        new("BatchEntryIdsNotDistinctException", "BatchEntryIdsNotDistinct", 400, $"Two or more batch entries in the request have the same Id: {id}.");

    public static AwsServiceException InvalidBatchEntryId(string id) =>
        new("InvalidBatchEntryIdException", "InvalidBatchEntryId", 400,
            $"The Id of a batch entry in a batch request doesn't abide by the specification: '{id}' (1 to 80 alphanumeric characters, hyphens and underscores).");

    public static AwsServiceException BatchRequestTooLong(int size) =>
        new("BatchRequestTooLongException", "BatchRequestTooLong", 400,
            $"The length of all the messages put together is more than the limit: {size} bytes (at most 262144).");
}
