using System.Globalization;
using System.Threading.Channels;
using Amazon.SQS;
using Amazon.SQS.Model;
using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Transport;
using Microsoft.Extensions.Logging;

namespace Messaging.Aws;

/// <summary>
/// SQS's receive loops for one subscription's queue. Everything between receiving and settling is the
/// <see cref="ReceivePipeline"/>'s; this class is the broker's side of it:
/// <list type="bullet">
/// <item>Receiving: long polls (up to 10 messages each), several in flight, each asking only for the places the pipeline
/// reserved, so never more than <c>Concurrency + Prefetch</c> messages are held.</item>
/// <item>Leases: the pipeline asks for held messages' visibility to be extended (in batches of 10) while they wait or their
/// handler runs; a receipt handle SQS no longer accepts is a lost lease.</item>
/// <item>Settlement: completions are coalesced into DeleteMessageBatch calls; a retry is ChangeMessageVisibility to the
/// delay; a dead letter is a copy, with metadata, sent to the dead-letter queue before the original is deleted.</item>
/// <item>Failures of SQS calls are retried by the SDK; a receive that still fails makes its loop back off and go on (<see cref="PullReceiveLoop{T}"/>).</item>
/// </list>
/// </summary>
internal sealed partial class SqsReceiver : ITransportReceiver
{
    private const int VisibilitySafetyMarginSeconds = 5;
    private readonly SnsSqsTransport _transport;
    private readonly ReceivePipeline _pipeline;
    private readonly string _subscription;
    private readonly string _queueUrl;
    private readonly string _deadLetterUrl;
    private readonly bool _fifo;
    private readonly ILogger _logger;
    private readonly IAmazonSQS _sqs;
    private readonly int _visibilitySeconds;
    private readonly PullReceiveLoop<Message> _receiving;
    private readonly Channel<(string ReceiptHandle, TaskCompletionSource Done)> _deletes = Channel.CreateUnbounded<(string, TaskCompletionSource)>();
    private Task _deleteLoop = Task.CompletedTask;
    private volatile bool _crashed;
    private int _disposed;

    // fifo: the queue (and its dead-letter queue) is FIFO, the subscription ordered.
    public SqsReceiver(SnsSqsTransport transport, ReceivePipeline pipeline, string queueUrl, string deadLetterUrl, bool fifo)
    {
        _fifo = fifo;
        _transport = transport;
        _pipeline = pipeline;
        _subscription = pipeline.Subscription.Name;
        _queueUrl = queueUrl;
        _deadLetterUrl = deadLetterUrl;
        _logger = transport.Logger;
        _sqs = transport.Clients.Sqs;
        _visibilitySeconds = Math.Max(1, SnsSqsTransport.VisibilitySeconds(transport.Options.VisibilityTimeout));
        ReceiverCount = Math.Clamp((pipeline.Capacity + 9) / 10, 1, transport.Options.MaxConcurrentReceives);
        _receiving = new PullReceiveLoop<Message>(pipeline, queueUrl, maxPerReceive: 10, ReceiveAsync, m => new SqsMessage(this, m), _logger);
    }

    internal int ReceiverCount { get; }

    /// <summary>The URL of the subscription's queue.</summary>
    internal string QueueUrl => _queueUrl;

    /// <summary>Messages received but not started are made visible again at once (SQS counts that receive).</summary>
    public StopBehavior StopBehavior => StopBehavior.ReturnUnstarted;

    /// <summary>A third of the visibility timeout, so that two extensions can fail before a held message reappears.</summary>
    public TimeSpan? LeaseRenewalInterval => TimeSpan.FromSeconds(Math.Max(1, _visibilitySeconds / 3.0));

    public void Start()
    {
        _receiving.Start(ReceiverCount);
        _deleteLoop = Task.Run(DeleteLoopAsync);
    }

    // ---- receiving -----------------------------------------------------------------------------

    private async Task<IReadOnlyList<Message>> ReceiveAsync(int places, CancellationToken cancellationToken)
    {
        var response = await _transport.Clients.SqsReceive.ReceiveMessageAsync(new ReceiveMessageRequest
        {
            QueueUrl = _queueUrl,
            MaxNumberOfMessages = places,
            WaitTimeSeconds = _transport.Options.WaitTimeSeconds,
            VisibilityTimeout = _visibilitySeconds,
            MessageAttributeNames = ["All"],
            MessageSystemAttributeNames = ["ApproximateReceiveCount"],
        }, cancellationToken).ConfigureAwait(false);
        return response.Messages ?? [];
    }

    // ---- leases --------------------------------------------------------------------------------

    public async Task RenewLeasesAsync(IReadOnlyList<ReceivedMessage> messages, CancellationToken cancellationToken)
    {
        var now = _pipeline.Time.GetUtcNow();
        var held = new List<SqsMessage>(messages.Count);
        foreach (var message in messages.Cast<SqsMessage>())
        {
            // SQS refuses to keep a message invisible for more than 12 hours in total since it was received.
            if (message.RemainingVisibilitySeconds(now) <= 0)
            {
                message.ReportLeaseLost("held 12 hours, the most SQS allows; it becomes visible to other consumers");
            }
            else
            {
                held.Add(message);
            }
        }
        foreach (var chunk in held.Chunk(10))
        {
            var response = await _sqs.ChangeMessageVisibilityBatchAsync(new ChangeMessageVisibilityBatchRequest
            {
                QueueUrl = _queueUrl,
                Entries = chunk.Select((m, i) => new ChangeMessageVisibilityBatchRequestEntry
                {
                    Id = i.ToString(CultureInfo.InvariantCulture),
                    ReceiptHandle = m.ReceiptHandle,
                    VisibilityTimeout = Math.Min(_visibilitySeconds, m.RemainingVisibilitySeconds(now)),
                }).ToList(),
            }, cancellationToken).ConfigureAwait(false);
            var failed = response.Failed?.ToDictionary(f => f.Id, StringComparer.Ordinal) ?? [];
            for (var i = 0; i < chunk.Length; i++)
            {
                if (!failed.TryGetValue(i.ToString(CultureInfo.InvariantCulture), out var failure))
                {
                    chunk[i].LeasedAt = now;
                }
                else if (failure.SenderFault == true)
                {
                    // The receipt handle is no longer valid: the message was received again elsewhere, or deleted.
                    chunk[i].ReportLeaseLost($"{failure.Code}: {failure.Message}");
                }
                else
                {
                    LogLeaseFailed(_subscription, 1, failure.Code);
                }
            }
        }
    }

    // ---- deletes -------------------------------------------------------------------------------

    private Task DeleteAsync(string receiptHandle)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_deletes.Writer.TryWrite((receiptHandle, done)))
        {
            done.SetException(new ObjectDisposedException(nameof(SqsReceiver)));
        }
        return done.Task;
    }

    /// <summary>Coalesces completions: whatever is waiting (up to 10) goes in one DeleteMessageBatch; up to 4 batches in flight.</summary>
    private async Task DeleteLoopAsync()
    {
        using var inFlight = new SemaphoreSlim(4, 4);
        var reader = _deletes.Reader;
        var running = new List<Task>();
        try
        {
            while (await reader.WaitToReadAsync(CancellationToken.None).ConfigureAwait(false))
            {
                var batch = new List<(string ReceiptHandle, TaskCompletionSource Done)>(10);
                while (batch.Count < 10 && reader.TryRead(out var item))
                {
                    batch.Add(item);
                }
                await inFlight.WaitAsync().ConfigureAwait(false);
                running.RemoveAll(t => t.IsCompleted);
                running.Add(DeleteBatchAsync(batch, inFlight));
            }
        }
        finally
        {
            await Task.WhenAll(running).ConfigureAwait(false);
        }
    }

    private async Task DeleteBatchAsync(List<(string ReceiptHandle, TaskCompletionSource Done)> batch, SemaphoreSlim inFlight)
    {
        try
        {
            var response = await _sqs.DeleteMessageBatchAsync(new DeleteMessageBatchRequest
            {
                QueueUrl = _queueUrl,
                Entries = batch.Select((b, i) => new DeleteMessageBatchRequestEntry { Id = i.ToString(CultureInfo.InvariantCulture), ReceiptHandle = b.ReceiptHandle }).ToList(),
            }, CancellationToken.None).ConfigureAwait(false);
            var failed = response.Failed?.ToDictionary(f => f.Id, StringComparer.Ordinal) ?? [];
            for (var i = 0; i < batch.Count; i++)
            {
                if (failed.TryGetValue(i.ToString(CultureInfo.InvariantCulture), out var failure))
                {
                    batch[i].Done.TrySetException(new InvalidOperationException($"SQS did not delete a message of subscription '{_subscription}': {failure.Code}: {failure.Message}"));
                }
                else
                {
                    batch[i].Done.TrySetResult();
                }
            }
        }
        catch (Exception ex)
        {
            foreach (var item in batch)
            {
                item.Done.TrySetException(ex);
            }
        }
        finally
        {
            inFlight.Release();
        }
    }

    // ---- stopping ------------------------------------------------------------------------------

    public Task StopReceivingAsync(CancellationToken cancellationToken) => _receiving.StopAsync(cancellationToken);

    public Task DrainedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Models a crash: nothing in flight is settled or given back; those messages reappear after their visibility timeout and
    /// are received again with the receive count (the attempt number) incremented.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }
        _transport.Forget(this);
        _crashed = !_pipeline.IsStopping;
        await _receiving.DisposeAsync().ConfigureAwait(false);
        await _pipeline.AbortAsync().ConfigureAwait(false);
        _deletes.Writer.TryComplete();
        try
        {
            await _deleteLoop.WaitAsync(TimeSpan.FromSeconds(10), _pipeline.Time).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            LogDisposeTimedOut(_subscription);
        }
    }

    // ---- one message ---------------------------------------------------------------------------

    private sealed class SqsMessage(SqsReceiver owner, Message message) : ReceivedMessage
    {
        public string ReceiptHandle => message.ReceiptHandle;

        public override string? MessageId => message.MessageId;

        /// <summary>
        /// On a FIFO queue, yes: a retry keeps the message in flight (invisible for the delay), and SQS hands out no later
        /// message of its group while one is in flight, so the group (the event's key) waits behind it; the later messages
        /// the pipeline gives back become receivable only after it.
        /// </summary>
        protected override bool RetryKeepsKeyOrder => owner._fifo;
        /// <summary>Whole seconds this message may still be kept invisible (12 hours in total since it was received), less a safety margin.</summary>
        public int RemainingVisibilitySeconds(DateTimeOffset now) =>
            (int)Math.Floor((SnsSqsTransport.MaxRetryDelay - (now - ReceivedAt)).TotalSeconds) - VisibilitySafetyMarginSeconds;

        protected override int ReadAttempt() => DeliveryAttempt.FromWire(0, SqsMessageAttributes.ReceiveCount(message) ?? 1);

        protected override CloudEvent Decode() =>
            owner._transport.Codec.Decode(message.Body ?? string.Empty, SqsMessageAttributes.ToStrings(message.MessageAttributes));

        protected override Task CompleteAsync(CancellationToken cancellationToken) =>
            owner.DeleteAsync(ReceiptHandle).WaitAsync(cancellationToken);

        protected override async Task RetryAsync(TimeSpan delay, CancellationToken cancellationToken)
        {
            // Whole seconds only: a sub-second delay is rounded up, never down, so backoff is never shorter than asked. The
            // ceiling is what is left of the 12 hours SQS allows since the receive.
            var remaining = RemainingVisibilitySeconds(owner._pipeline.Time.GetUtcNow());
            var seconds = (int)Math.Clamp(Math.Ceiling(delay.TotalSeconds), 0, Math.Max(0, remaining));
            await owner._sqs.ChangeMessageVisibilityAsync(owner._queueUrl, ReceiptHandle, seconds, cancellationToken).ConfigureAwait(false);
        }

        protected override async Task DeadLetterAsync(DeadLetterMetadata metadata, CancellationToken cancellationToken)
        {
            var (body, attributes) = owner.DeadLetterCopy(message, Event);
            attributes[SnsSqsCodec.DeadLetterMetadataAttribute] = new MessageAttributeValue
            {
                DataType = SnsSqsCodec.StringDataType,
                StringValue = SqsMessageAttributes.EncodeMetadata(metadata),
            };
            // Send the copy before deleting the original: a crash in between duplicates, never loses.
            await owner._sqs.SendMessageAsync(new SendMessageRequest
            {
                QueueUrl = owner._deadLetterUrl,
                MessageBody = body,
                MessageAttributes = attributes,
                // FIFO dead-letter queue: a group of its own per dead letter (dead letters keep no order, and a reader of the
                // queue must not find them locked behind each other); the SQS message id as deduplication id, so a copy sent
                // again after a crash between send and delete (within SQS's 5-minute window) is not stored twice.
                MessageGroupId = owner._fifo ? SnsSqsNames.FifoId(message.MessageId) : null,
                MessageDeduplicationId = owner._fifo ? SnsSqsNames.FifoId(message.MessageId) : null,
            }, cancellationToken).ConfigureAwait(false);
            await owner.DeleteAsync(ReceiptHandle).WaitAsync(cancellationToken).ConfigureAwait(false);
        }

        protected override Task ReturnAsync(CancellationToken cancellationToken) =>
            owner._crashed
                ? Task.CompletedTask // a crash gives nothing back: the visibility timeout does
                : owner._sqs.ChangeMessageVisibilityAsync(owner._queueUrl, ReceiptHandle, 0, cancellationToken);
    }

    /// <summary>
    /// The dead-letter copy keeps the body and attributes; one attribute must stay free for the metadata. A message that
    /// already has 10 is re-encoded in structured mode when it is a CloudEvent; otherwise its last attributes are dropped.
    /// </summary>
    private (string Body, Dictionary<string, MessageAttributeValue> Attributes) DeadLetterCopy(Message message, CloudEvent? cloudEvent)
    {
        var attributes = SqsMessageAttributes.Copy(message.MessageAttributes);
        if (attributes.Count < SnsSqsCodec.MaxMessageAttributes)
        {
            return (message.Body ?? string.Empty, attributes);
        }
        if (cloudEvent is not null)
        {
            var structured = SnsSqsCodec.EncodeStructured(cloudEvent);
            return (structured.Body, SqsMessageAttributes.FromStrings(structured.Attributes));
        }
        var dropped = attributes.Keys.Order(StringComparer.Ordinal).Skip(SnsSqsCodec.MaxMessageAttributes - 1).ToList();
        foreach (var name in dropped)
        {
            attributes.Remove(name);
        }
        LogAttributesDropped(_subscription, message.MessageId, string.Join(", ", dropped));
        return (message.Body ?? string.Empty, attributes);
    }



    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not extend the visibility of {Count} message(s) of subscription {Subscription}: {Reason}")]
    private partial void LogLeaseFailed(string subscription, int count, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Dead-lettered message {MessageId} of subscription {Subscription} had no room for metadata; dropped attributes {Attributes}")]
    private partial void LogAttributesDropped(string subscription, string? messageId, string attributes);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Receiver of subscription {Subscription} did not wind down within 10 s")]
    private partial void LogDisposeTimedOut(string subscription);
}
