using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Transport;

namespace Messaging.InMemory;

/// <summary>The in-memory broker's receive loop: takes messages from the subscription's queue as the pipeline has room.</summary>
internal sealed class InMemoryReceiver : ITransportReceiver
{
    private readonly InMemoryTransport _transport;
    private readonly InMemoryQueue _queue;
    private readonly ReceivePipeline _pipeline;
    private readonly PullReceiveLoop<InMemoryMessage> _receiving;
    private int _disposed;

    public InMemoryReceiver(InMemoryTransport transport, InMemoryQueue queue, ReceivePipeline pipeline)
    {
        _transport = transport;
        _queue = queue;
        _pipeline = pipeline;
        _receiving = new PullReceiveLoop<InMemoryMessage>(pipeline, queue.Name, maxPerReceive: 16, ReceiveAsync, m => new InMemoryReceivedMessage(this, m));
    }

    // Nothing is lost by handling what was taken from an in-process queue, and giving it back would count an attempt.
    public StopBehavior StopBehavior => StopBehavior.HandleReceived;

    public TimeSpan? LeaseRenewalInterval => null;

    public void Start() => _receiving.Start();

    /// <summary>Waits for a message, then takes what is there, up to the places the pipeline reserved.</summary>
    private async Task<IReadOnlyList<InMemoryMessage>> ReceiveAsync(int places, CancellationToken cancellationToken)
    {
        while (await _queue.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
        {
            List<InMemoryMessage>? taken = null;
            while ((taken?.Count ?? 0) < places && _queue.TryRead(out var message))
            {
                (taken ??= new List<InMemoryMessage>(Math.Min(places, 16))).Add(message);
            }
            if (taken is not null)
            {
                return taken;
            }
        }
        return [];
    }

    public Task RenewLeasesAsync(IReadOnlyList<ReceivedMessage> messages, CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopReceivingAsync(CancellationToken cancellationToken) => _receiving.StopAsync(cancellationToken);

    public Task DrainedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Like a dropped connection: receiving stops and everything unsettled goes back to the queue.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }
        await _receiving.DisposeAsync().ConfigureAwait(false);
        await _pipeline.AbortAsync().ConfigureAwait(false);
        _transport.Remove(this);
    }

    private sealed class InMemoryReceivedMessage(InMemoryReceiver owner, InMemoryMessage message) : ReceivedMessage
    {
        // Counted by the broker's copy of the message, so it survives consumers that die.
        private readonly int _attempt = Interlocked.Increment(ref message.DeliveryCount);

        public override string? MessageId => message.MessageId;

        protected internal override int ReadAttempt() => _attempt;

        protected internal override CloudEvent Decode() => owner._transport.Decode(message);

        // An ordered queue keeps the message's key out until its retry comes back to the head of the key, like an SQS FIFO
        // group behind an invisible message: no later message of the key can overtake it.
        protected internal override bool RetryKeepsKeyOrder => owner._queue.Ordered;

        protected internal override Task CompleteAsync(CancellationToken cancellationToken)
        {
            owner._queue.Settled(message);
            return Task.CompletedTask;
        }

        protected internal override Task RetryAsync(TimeSpan delay, CancellationToken cancellationToken)
        {
            if (delay <= TimeSpan.Zero)
            {
                owner._queue.Redeliver(message);
            }
            else
            {
                _ = RedeliverLaterAsync(owner._queue, message, delay, owner._transport.Time);
            }
            return Task.CompletedTask;
        }

        protected internal override Task DeadLetterAsync(DeadLetterMetadata metadata, CancellationToken cancellationToken)
        {
            owner.MoveToDeadLetters(message, metadata);
            owner._queue.Settled(message);
            return Task.CompletedTask;
        }

        protected internal override Task ReturnAsync(CancellationToken cancellationToken)
        {
            var returns = Interlocked.Increment(ref message.Returns);
            var limit = owner._transport.CrashDeliveryLimit;
            if (returns < limit)
            {
                owner._queue.Redeliver(message);
                return Task.CompletedTask;
            }
            // The broker's own safety net: a message that keeps coming back unsettled would otherwise kill its consumers for ever.
            owner.MoveToDeadLetters(message, new DeadLetterMetadata
            {
                Reason = DeadLetterReason.DeliveryLimitExceeded,
                Description = $"Given back unsettled {returns} time(s) (consumer crashes or forced stops); Messaging:InMemory:CrashDeliveryLimit is {limit}.",
                AttemptCount = message.DeliveryCount,
                SourceSubscription = owner._queue.Name,
                Time = owner._transport.Time.GetUtcNow(),
            });
            owner._queue.Settled(message);
            return Task.CompletedTask;
        }

        private static async Task RedeliverLaterAsync(InMemoryQueue queue, InMemoryMessage message, TimeSpan delay, TimeProvider time)
        {
            // The broker, not the consumer, owns the delay: stopping a consumer does not lose the message.
            await Task.Delay(delay, time, CancellationToken.None).ConfigureAwait(false);
            queue.Redeliver(message);
        }
    }

    private void MoveToDeadLetters(InMemoryMessage message, DeadLetterMetadata metadata)
    {
        var properties = new Dictionary<string, string>(message.Properties, StringComparer.Ordinal);
        foreach (var (key, value) in metadata.ToProperties())
        {
            properties[key] = value;
        }
        var deadLettered = message.CopyWith(properties);
        deadLettered.DeliveryCount = message.DeliveryCount;
        lock (_queue.DeadLetterLock)
        {
            _queue.DeadLetters.Add(deadLettered);
        }
    }
}
