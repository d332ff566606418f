using Messaging.LocalAws.Protocol;

namespace Messaging.LocalAws.Sqs;

/// <summary>
/// SQS errors with the shape names, query-compatible codes and HTTP statuses of the SQS service model.
/// </summary>
internal static class SqsErrors
{
    public static AwsServiceException QueueDoesNotExist() =>
        new("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", 400, "The specified queue does not exist.");

    public static AwsServiceException QueueNameExists(string attributeName) =>
        new("QueueNameExists", "QueueAlreadyExists", 400,
            $"A queue already exists with the same name and a different value for attribute {attributeName}");

    public static AwsServiceException QueueDeletedRecently(string queueName) =>
        new("QueueDeletedRecently", "AWS.SimpleQueueService.QueueDeletedRecently", 400,
            $"You must wait 60 seconds after deleting a queue before you can create another with the same name ('{queueName}').");

    public static AwsServiceException InvalidParameterValue(string message) =>
        new("InvalidParameterValueException", "InvalidParameterValue", 400, message);

    public static AwsServiceException InvalidParameterValue(string parameter, string? value, string reason) =>
        InvalidParameterValue($"Value {value} for parameter {parameter} is invalid. Reason: {reason}");

    public static AwsServiceException MissingParameter(string parameter) =>
        new("MissingRequiredParameterException", "MissingParameter", 400, $"The request must contain the parameter {parameter}.");

    public static AwsServiceException InvalidAttributeName(string message) =>
        new("InvalidAttributeName", "InvalidAttributeName", 400, message);

    public static AwsServiceException InvalidAttributeValue(string message) =>
        new("InvalidAttributeValue", "InvalidAttributeValue", 400, message);

    public static AwsServiceException InvalidMessageContents(string message) =>
        new("InvalidMessageContents", "InvalidMessageContents", 400, message);

    public static AwsServiceException ReceiptHandleIsInvalid(string receiptHandle) =>
        new("ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", 404,
            $"The input receipt handle \"{receiptHandle}\" is not a valid receipt handle.");

    public static AwsServiceException MessageNotInflight() =>
        new("MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight", 400,
            "The specified message isn't in flight.");

    public static AwsServiceException EmptyBatchRequest(string entryType) =>
        new("EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest", 400,
            $"There should be at least one {entryType} in the request.");

    public static AwsServiceException TooManyEntriesInBatchRequest(int count) =>
        new("TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", 400,
            $"Maximum number of entries per request are 10. You have sent {count}.");

    public static AwsServiceException BatchEntryIdsNotDistinct(string id) =>
        new("BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", 400, $"Id {id} repeated.");

    public static AwsServiceException InvalidBatchEntryId() =>
        new("InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId", 400,
            "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long.");

    public static AwsServiceException BatchRequestTooLong(int limit, int size) =>
        new("BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong", 400,
            $"Batch requests cannot be longer than {limit} bytes. You have sent {size} bytes.");

    public static AwsServiceException PurgeQueueInProgress(string queueArn) =>
        new("PurgeQueueInProgress", "AWS.SimpleQueueService.PurgeQueueInProgress", 403,
            $"Only one PurgeQueue operation on {queueArn} is allowed every 60 seconds.");

    public static AwsServiceException UnsupportedOperation(string message) =>
        new("UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation", 400, message);

    public static AwsServiceException UnknownOperation(string target) =>
        new("UnknownOperationException", "InvalidAction", 400,
            $"The action or operation requested is invalid or not supported by this endpoint: '{target}'.");

    public static AwsServiceException Serialization(string message) =>
        new("SerializationException", "SerializationException", 400, message);
}
