using System.Collections.Concurrent;
using System.Globalization;
using System.Threading.Channels;
using Amazon.SQS;
using Amazon.SQS.Model;
using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Envelope;
using Messaging.Topology;
using Messaging.Transport;
using Microsoft.Extensions.Logging;

namespace Messaging.Aws;

/// <summary>
/// Consumes one subscription's queue.
/// <list type="bullet">
/// <item>Receiving: long polls (up to 10 messages each), several in flight, never more received and unsettled messages
/// than <c>Concurrency + Prefetch</c>; handlers run at most <c>Concurrency</c> at once.</item>
/// <item>Leases: every received, unsettled message has its visibility extended while it waits or its handler runs.</item>
/// <item>Settlement: completions are coalesced into DeleteMessageBatch calls; a retry is ChangeMessageVisibility to the
/// delay; a dead letter is a copy, with metadata, sent to the dead-letter queue before the original is deleted.</item>
/// <item>Graceful stop: no more receives; running handlers finish; messages received but not started are made visible
/// again at once (which SQS counts as a receive, so their next attempt number is one higher).</item>
/// <item>Failures of SQS calls are retried by the SDK; a receive loop that still fails backs off and keeps going.</item>
/// </list>
/// </summary>
internal sealed partial class SqsConsumer : ITransportConsumer
{
    private static readonly TimeSpan MaxReceiveBackoff = TimeSpan.FromSeconds(10);
    private const int VisibilitySafetyMarginSeconds = 5;
    private readonly SnsSqsTransport _transport;
    private readonly SubscriptionDefinition _subscription;
    private readonly string _queueUrl;
    private readonly string _deadLetterUrl;
    private readonly DeliveryCallback _onDelivery;
    private readonly ILogger _logger;
    private readonly IAmazonSQS _sqs;
    private readonly SemaphoreSlim _capacity;
    private readonly SemaphoreSlim _handlerSlots;
    private readonly int _visibilitySeconds;
    private readonly CancellationTokenSource _stopReceiving = new();
    private readonly CancellationTokenSource _abort = new();
    private readonly ConcurrentDictionary<Delivery, byte> _unsettled = new();
    private readonly Channel<(string ReceiptHandle, TaskCompletionSource Done)> _deletes = Channel.CreateUnbounded<(string, TaskCompletionSource)>();
    private Task[] _receiveLoops = [];
    private Task _leaseLoop = Task.CompletedTask;
    private Task _deleteLoop = Task.CompletedTask;
    private int _disposed;

    public SqsConsumer(SnsSqsTransport transport, SubscriptionDefinition subscription, string queueUrl, string deadLetterUrl, DeliveryCallback onDelivery)
    {
        _transport = transport;
        _subscription = subscription;
        _queueUrl = queueUrl;
        _deadLetterUrl = deadLetterUrl;
        _onDelivery = onDelivery;
        _logger = transport.Logger;
        _sqs = transport.Clients.Sqs;
        var concurrency = Math.Max(1, subscription.Concurrency);
        var maxOutstanding = concurrency + Math.Max(0, subscription.Prefetch);
        _capacity = new SemaphoreSlim(maxOutstanding, maxOutstanding);
        _handlerSlots = new SemaphoreSlim(concurrency, concurrency);
        _visibilitySeconds = Math.Max(1, SnsSqsTransport.VisibilitySeconds(transport.Options.VisibilityTimeout));
        ReceiverCount = Math.Clamp((maxOutstanding + 9) / 10, 1, transport.Options.MaxConcurrentReceives);
    }

    internal int ReceiverCount { get; }

    public void Start()
    {
        _receiveLoops = Enumerable.Range(0, ReceiverCount).Select(_ => Task.Run(ReceiveLoopAsync)).ToArray();
        _leaseLoop = Task.Run(LeaseLoopAsync);
        _deleteLoop = Task.Run(DeleteLoopAsync);
    }

    // ---- receiving -----------------------------------------------------------------------------

    private async Task ReceiveLoopAsync()
    {
        var token = _stopReceiving.Token;
        var backoff = TimeSpan.FromMilliseconds(200);
        var failing = false;
        while (!token.IsCancellationRequested)
        {
            try
            {
                await _capacity.WaitAsync(token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            var take = 1;
            while (take < 10 && _capacity.Wait(0))
            {
                take++;
            }
            List<Message> messages;
            try
            {
                var response = await _sqs.ReceiveMessageAsync(new ReceiveMessageRequest
                {
                    QueueUrl = _queueUrl,
                    MaxNumberOfMessages = take,
                    WaitTimeSeconds = _transport.Options.WaitTimeSeconds,
                    VisibilityTimeout = _visibilitySeconds,
                    MessageAttributeNames = ["All"],
                    MessageSystemAttributeNames = ["ApproximateReceiveCount"],
                }, token).ConfigureAwait(false);
                messages = response.Messages ?? [];
                if (failing)
                {
                    failing = false;
                    LogReceiveRecovered(_subscription.Name);
                }
                backoff = TimeSpan.FromMilliseconds(200);
            }
            catch (Exception ex)
            {
                _capacity.Release(take);
                if (token.IsCancellationRequested)
                {
                    return;
                }
                failing = true;
                LogReceiveFailed(ex, _subscription.Name, backoff);
                try
                {
                    await Task.Delay(backoff, token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, MaxReceiveBackoff.Ticks));
                continue;
            }
            if (messages.Count < take)
            {
                _capacity.Release(take - messages.Count);
            }
            foreach (var message in messages)
            {
                var delivery = new Delivery(this, message);
                _unsettled.TryAdd(delivery, 0);
                _ = ProcessAsync(delivery);
            }
        }
    }

    private async Task ProcessAsync(Delivery delivery)
    {
        try
        {
            try
            {
                await _handlerSlots.WaitAsync(_stopReceiving.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Stopping before its handler started: give it back at once rather than holding it until its timeout.
                await ReleaseUnstartedAsync(delivery).ConfigureAwait(false);
                return;
            }
            try
            {
                await _onDelivery(delivery, _abort.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (!_abort.IsCancellationRequested)
            {
                // Settling failed (SQS unreachable beyond the SDK's retries): the message reappears after its visibility timeout.
                LogSettleFailed(ex, _subscription.Name, delivery.MessageId);
            }
            catch (Exception)
            {
                // Aborted (crash simulation or forced stop): left as it is; it reappears after its visibility timeout.
            }
            finally
            {
                _handlerSlots.Release();
            }
        }
        finally
        {
            await delivery.MarkSettledAsync().ConfigureAwait(false);
            _unsettled.TryRemove(delivery, out _);
            _capacity.Release();
        }
    }

    private async Task ReleaseUnstartedAsync(Delivery delivery)
    {
        if (!await delivery.MarkSettledAsync().ConfigureAwait(false) || _abort.IsCancellationRequested)
        {
            return;
        }
        try
        {
            await _sqs.ChangeMessageVisibilityAsync(_queueUrl, delivery.ReceiptHandle, 0, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // Best effort: if it fails, the message simply reappears when its visibility timeout runs out.
            LogReleaseFailed(_subscription.Name, delivery.MessageId, ex.Message);
        }
    }

    // ---- leases --------------------------------------------------------------------------------

    /// <summary>Extends the visibility of held messages every third of the timeout, in batches of 10.</summary>
    private async Task LeaseLoopAsync()
    {
        var period = TimeSpan.FromSeconds(Math.Max(1, _visibilitySeconds / 3.0));
        using var timer = new PeriodicTimer(period);
        try
        {
            while (await timer.WaitForNextTickAsync(_abort.Token).ConfigureAwait(false))
            {
                var due = _unsettled.Keys.Where(d => DateTime.UtcNow - d.LeasedAt >= period).ToList();
                foreach (var chunk in due.Chunk(10))
                {
                    await ExtendAsync(chunk).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException)
        {
            // Aborted.
        }
    }

    private async Task ExtendAsync(Delivery[] chunk)
    {
        // A delivery's gate is held while its extension is in flight, so a retry's own visibility change can never be overwritten by it.
        var held = chunk.Where(d => d.TryHoldForLease()).ToList();
        // SQS refuses to keep a message invisible for more than 12 hours in total since it was received.
        foreach (var spent in held.Where(d => d.RemainingVisibilitySeconds <= 0).ToList())
        {
            spent.ReleaseLease();
            held.Remove(spent);
            LogLeaseExhausted(_subscription.Name, spent.MessageId);
        }
        if (held.Count == 0)
        {
            return;
        }
        try
        {
            var response = await _sqs.ChangeMessageVisibilityBatchAsync(new ChangeMessageVisibilityBatchRequest
            {
                QueueUrl = _queueUrl,
                Entries = held.Select((d, i) => new ChangeMessageVisibilityBatchRequestEntry
                {
                    Id = i.ToString(CultureInfo.InvariantCulture),
                    ReceiptHandle = d.ReceiptHandle,
                    VisibilityTimeout = Math.Min(_visibilitySeconds, d.RemainingVisibilitySeconds),
                }).ToList(),
            }, _abort.Token).ConfigureAwait(false);
            var now = DateTime.UtcNow;
            var failed = response.Failed?.Select(f => f.Id).ToHashSet(StringComparer.Ordinal) ?? [];
            for (var i = 0; i < held.Count; i++)
            {
                if (!failed.Contains(i.ToString(CultureInfo.InvariantCulture)))
                {
                    held[i].LeasedAt = now;
                }
            }
            if (failed.Count > 0)
            {
                LogLeaseFailed(_subscription.Name, failed.Count, response.Failed![0].Code);
            }
        }
        catch (Exception ex)
        {
            // Tried again on the next tick; a message whose lease runs out is received again, never lost.
            LogLeaseFailed(_subscription.Name, held.Count, ex.Message);
        }
        finally
        {
            foreach (var delivery in held)
            {
                delivery.ReleaseLease();
            }
        }
    }

    // ---- deletes -------------------------------------------------------------------------------

    private Task CompleteAsync(string receiptHandle)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_deletes.Writer.TryWrite((receiptHandle, done)))
        {
            done.SetException(new ObjectDisposedException(nameof(SqsConsumer)));
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
                    batch[i].Done.TrySetException(new InvalidOperationException($"SQS did not delete a message of subscription '{_subscription.Name}': {failure.Code}: {failure.Message}"));
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

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopReceiving.CancelAsync().ConfigureAwait(false);
        try
        {
            await Task.WhenAll(_receiveLoops).WaitAsync(cancellationToken).ConfigureAwait(false);
            while (!_unsettled.IsEmpty)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(20), cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
            await AbortAsync().ConfigureAwait(false);
        }
    }

    internal async Task AbortAsync()
    {
        if (!_stopReceiving.IsCancellationRequested)
        {
            await _stopReceiving.CancelAsync().ConfigureAwait(false);
        }
        if (!_abort.IsCancellationRequested)
        {
            await _abort.CancelAsync().ConfigureAwait(false);
        }
        _deletes.Writer.TryComplete();
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }
        _transport.Forget(this);
        await AbortAsync().ConfigureAwait(false);
        try
        {
            await Task.WhenAll([.. _receiveLoops, _leaseLoop, _deleteLoop]).WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            LogDisposeTimedOut(_subscription.Name);
        }
    }

    // ---- one delivery --------------------------------------------------------------------------

    private sealed class Delivery : ITransportDelivery
    {
        private readonly SqsConsumer _owner;
        private readonly Message _message;
        private readonly SemaphoreSlim _gate = new(1, 1);
        private bool _settled;

        public Delivery(SqsConsumer owner, Message message)
        {
            _owner = owner;
            _message = message;
            LeasedAt = DateTime.UtcNow;
            ReceivedAt = LeasedAt;
            Attempt = SqsMessageAttributes.ReceiveCount(message) ?? 1;
            try
            {
                Event = owner._transport.Codec.Decode(message.Body ?? string.Empty, SqsMessageAttributes.ToStrings(message.MessageAttributes));
            }
            catch (InvalidCloudEventException ex)
            {
                DecodeError = ex.Message;
            }
        }

        public DateTime LeasedAt { get; set; }

        public DateTime ReceivedAt { get; }

        /// <summary>Whole seconds this message may still be kept invisible (12 hours in total since it was received), less a safety margin.</summary>
        public int RemainingVisibilitySeconds =>
            (int)Math.Floor((SnsSqsTransport.MaxRetryDelay - (DateTime.UtcNow - ReceivedAt)).TotalSeconds) - VisibilitySafetyMarginSeconds;

        public string ReceiptHandle => _message.ReceiptHandle;

        public CloudEvent? Event { get; }

        public string? DecodeError { get; }

        public int Attempt { get; }

        public string Subscription => _owner._subscription.Name;

        public string? MessageId => _message.MessageId;

        public bool TryHoldForLease()
        {
            if (!_gate.Wait(0))
            {
                return false;
            }
            if (_settled)
            {
                _gate.Release();
                return false;
            }
            return true;
        }

        public void ReleaseLease() => _gate.Release();

        /// <summary>Marks the delivery settled (no more lease extensions); false when it already was.</summary>
        public async Task<bool> MarkSettledAsync()
        {
            await _gate.WaitAsync().ConfigureAwait(false);
            try
            {
                if (_settled)
                {
                    return false;
                }
                _settled = true;
                return true;
            }
            finally
            {
                _gate.Release();
            }
        }

        public async Task CompleteAsync(CancellationToken cancellationToken)
        {
            if (!await BeginSettleAsync().ConfigureAwait(false))
            {
                return;
            }
            await _owner.CompleteAsync(ReceiptHandle).WaitAsync(cancellationToken).ConfigureAwait(false);
        }

        public async Task RetryAsync(TimeSpan delay, CancellationToken cancellationToken)
        {
            if (!await BeginSettleAsync().ConfigureAwait(false))
            {
                return;
            }
            // Whole seconds only: a sub-second delay is rounded up, never down, so backoff is never shorter than asked. The
            // ceiling is what is left of the 12 hours SQS allows since the receive.
            var seconds = (int)Math.Clamp(Math.Ceiling(delay.TotalSeconds), 0, Math.Max(0, RemainingVisibilitySeconds));
            await _owner._sqs.ChangeMessageVisibilityAsync(_owner._queueUrl, ReceiptHandle, seconds, cancellationToken).ConfigureAwait(false);
        }

        public async Task DeadLetterAsync(DeadLetterMetadata metadata, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(metadata);
            if (!await BeginSettleAsync().ConfigureAwait(false))
            {
                return;
            }
            var (body, attributes) = _owner.DeadLetterCopy(_message, Event);
            attributes[SnsSqsCodec.DeadLetterMetadataAttribute] = new MessageAttributeValue
            {
                DataType = SnsSqsCodec.StringDataType,
                StringValue = SqsMessageAttributes.EncodeMetadata(metadata),
            };
            // Send the copy before deleting the original: a crash in between duplicates, never loses.
            await _owner._sqs.SendMessageAsync(new SendMessageRequest
            {
                QueueUrl = _owner._deadLetterUrl,
                MessageBody = body,
                MessageAttributes = attributes,
            }, cancellationToken).ConfigureAwait(false);
            await _owner.CompleteAsync(ReceiptHandle).WaitAsync(cancellationToken).ConfigureAwait(false);
        }

        /// <summary>False when settling must not happen: already settled, or the consumer was aborted (a crash settles nothing).</summary>
        private async Task<bool> BeginSettleAsync()
        {
            if (_owner._abort.IsCancellationRequested)
            {
                return false;
            }
            return await MarkSettledAsync().ConfigureAwait(false);
        }
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
        LogAttributesDropped(_subscription.Name, message.MessageId, string.Join(", ", dropped));
        return (message.Body ?? string.Empty, attributes);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Receiving from subscription {Subscription} failed; retrying in {Delay}")]
    private partial void LogReceiveFailed(Exception exception, string subscription, TimeSpan delay);

    [LoggerMessage(Level = LogLevel.Information, Message = "Receiving from subscription {Subscription} works again")]
    private partial void LogReceiveRecovered(string subscription);

    [LoggerMessage(Level = LogLevel.Error, Message = "Could not settle message {MessageId} on subscription {Subscription}; it reappears after its visibility timeout")]
    private partial void LogSettleFailed(Exception exception, string subscription, string? messageId);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Could not hand back unstarted message {MessageId} of subscription {Subscription}: {Reason}; it reappears after its visibility timeout")]
    private partial void LogReleaseFailed(string subscription, string? messageId, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not extend the visibility of {Count} message(s) of subscription {Subscription}: {Reason}")]
    private partial void LogLeaseFailed(string subscription, int count, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Message {MessageId} of subscription {Subscription} has been held 12 hours, the most SQS allows; it becomes visible to other consumers")]
    private partial void LogLeaseExhausted(string subscription, string? messageId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Dead-lettered message {MessageId} of subscription {Subscription} had no room for metadata; dropped attributes {Attributes}")]
    private partial void LogAttributesDropped(string subscription, string? messageId, string attributes);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Consumer of subscription {Subscription} did not wind down within 10 s")]
    private partial void LogDisposeTimedOut(string subscription);
}
