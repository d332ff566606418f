using Messaging.LocalAws.Protocol;

namespace Messaging.LocalAws.Sqs;

/// <summary>A message stored in a queue. Mutable state is only touched under its queue's lock.</summary>
internal sealed class SqsMessage
{
    public required string MessageId { get; init; }
    public required string Body { get; init; }
    public required IReadOnlyDictionary<string, MessageAttribute> Attributes { get; init; }
    public string? AwsTraceHeader { get; init; }
    public string? MessageGroupId { get; init; }

    /// <summary>FIFO queues: the deduplication id given or derived from the body (content-based deduplication).</summary>
    public string? MessageDeduplicationId { get; init; }

    /// <summary>FIFO queues: the 20-digit sequence number SQS assigns, increasing per queue.</summary>
    public string? SequenceNumber { get; set; }
    public required string SenderId { get; init; }

    /// <summary>The enqueue time; retention counts from it, also after a move to a standard dead-letter queue (a FIFO one resets it).</summary>
    public required DateTimeOffset SentAt { get; set; }

    public int ReceiveCount { get; set; }
    public DateTimeOffset? FirstReceivedAt { get; set; }

    /// <summary>Until when the message is hidden (delay or visibility timeout).</summary>
    public DateTimeOffset VisibleAt { get; set; }

    /// <summary>True from a receive until the visibility timeout ends or is changed to 0; false while delayed.</summary>
    public bool WasReceived { get; set; }

    /// <summary>When the current receive started: the 12-hour visibility limit counts from here.</summary>
    public DateTimeOffset InFlightSince { get; set; }

    /// <summary>The receipt handle of the most recent receive; only it can delete the message.</summary>
    public string? CurrentReceiptHandle { get; set; }

    public string? DeadLetterQueueSourceArn { get; set; }
}

/// <summary>What one receive hands out: a snapshot taken under the queue lock.</summary>
internal sealed record ReceivedMessage(
    string MessageId,
    string ReceiptHandle,
    string Body,
    IReadOnlyDictionary<string, MessageAttribute> Attributes,
    IReadOnlyDictionary<string, string> SystemAttributes);
