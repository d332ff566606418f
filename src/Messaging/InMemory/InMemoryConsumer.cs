using System.Collections.Concurrent;
using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Envelope;
using Messaging.Topology;
using Messaging.Transport;

namespace Messaging.InMemory;

internal sealed class InMemoryConsumer : ITransportConsumer
{
    private readonly InMemoryTransport _transport;
    private readonly InMemoryQueue _queue;
    private readonly SubscriptionDefinition _subscription;
    private readonly DeliveryCallback _onDelivery;
    private readonly CancellationTokenSource _stopReceiving = new();
    private readonly CancellationTokenSource _abortHandlers = new();
    private readonly ConcurrentDictionary<Delivery, byte> _inFlight = new();
    private Task[] _workers = [];

    public InMemoryConsumer(InMemoryTransport transport, InMemoryQueue queue, SubscriptionDefinition subscription, DeliveryCallback onDelivery)
    {
        _transport = transport;
        _queue = queue;
        _subscription = subscription;
        _onDelivery = onDelivery;
    }

    public void Start() =>
        _workers = Enumerable.Range(0, _subscription.Concurrency).Select(_ => Task.Run(WorkAsync)).ToArray();

    private async Task WorkAsync()
    {
        var reader = _queue.Ready.Reader;
        try
        {
            while (await reader.WaitToReadAsync(_stopReceiving.Token).ConfigureAwait(false))
            {
                if (_stopReceiving.IsCancellationRequested || !reader.TryRead(out var message))
                {
                    continue;
                }
                await DeliverAsync(message).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (_stopReceiving.IsCancellationRequested)
        {
            // Stopping: no new messages; the in-flight one (if any) already finished above.
        }
    }

    private async Task DeliverAsync(InMemoryMessage message)
    {
        var attempt = Interlocked.Increment(ref message.DeliveryCount);
        CloudEvent? cloudEvent = null;
        string? error = null;
        try
        {
            cloudEvent = _transport.Decode(message);
        }
        catch (InvalidCloudEventException ex)
        {
            error = ex.Message;
        }
        var delivery = new Delivery(this, message, cloudEvent, error, attempt);
        _inFlight.TryAdd(delivery, 0);
        try
        {
            await _onDelivery(delivery, _abortHandlers.Token).ConfigureAwait(false);
        }
        catch (Exception) when (_abortHandlers.IsCancellationRequested)
        {
            // Aborted: the message was returned to the queue by AbortAsync.
        }
        catch (Exception)
        {
            // The contract layer settles every delivery itself; if settling failed, give the message back.
            delivery.Return();
        }
        finally
        {
            _inFlight.TryRemove(delivery, out _);
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopReceiving.CancelAsync().ConfigureAwait(false);
        try
        {
            await Task.WhenAll(_workers).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            await AbortAsync().ConfigureAwait(false);
        }
    }

    public async Task AbortAsync()
    {
        await _stopReceiving.CancelAsync().ConfigureAwait(false);
        await _abortHandlers.CancelAsync().ConfigureAwait(false);
        foreach (var delivery in _inFlight.Keys)
        {
            delivery.Return();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await AbortAsync().ConfigureAwait(false);
        _transport.Remove(this);
    }

    private sealed class Delivery(InMemoryConsumer owner, InMemoryMessage message, CloudEvent? cloudEvent, string? error, int attempt) : ITransportDelivery
    {
        private int _settled;

        public CloudEvent? Event => cloudEvent;

        public string? DecodeError => error;

        public int Attempt => attempt;

        public string Subscription => owner._subscription.Name;

        public string? MessageId => message.MessageId;

        public Task CompleteAsync(CancellationToken cancellationToken)
        {
            TrySettle();
            return Task.CompletedTask;
        }

        public Task RetryAsync(TimeSpan delay, CancellationToken cancellationToken)
        {
            if (!TrySettle())
            {
                return Task.CompletedTask;
            }
            var queue = owner._queue;
            if (delay <= TimeSpan.Zero)
            {
                return queue.Ready.Writer.WriteAsync(message, CancellationToken.None).AsTask();
            }
            _ = RequeueLaterAsync(queue, message, delay, owner._transport.Time);
            return Task.CompletedTask;
        }

        public Task DeadLetterAsync(DeadLetterMetadata metadata, CancellationToken cancellationToken)
        {
            if (!TrySettle())
            {
                return Task.CompletedTask;
            }
            var properties = new Dictionary<string, string>(message.Properties, StringComparer.Ordinal);
            foreach (var (key, value) in metadata.ToProperties())
            {
                properties[key] = value;
            }
            var deadLettered = message.CopyWith(properties);
            deadLettered.DeliveryCount = message.DeliveryCount;
            lock (owner._queue.DeadLetterLock)
            {
                owner._queue.DeadLetters.Add(deadLettered);
            }
            return Task.CompletedTask;
        }

        /// <summary>Gives the message back unsettled, as a broker does when a consumer's connection drops.</summary>
        public void Return()
        {
            if (TrySettle())
            {
                owner._queue.Ready.Writer.TryWrite(message);
            }
        }

        private bool TrySettle() => Interlocked.Exchange(ref _settled, 1) == 0;

        private static async Task RequeueLaterAsync(InMemoryQueue queue, InMemoryMessage message, TimeSpan delay, TimeProvider time)
        {
            // The broker, not the consumer, owns the delay: stopping a consumer does not lose the message.
            await Task.Delay(delay, time, CancellationToken.None).ConfigureAwait(false);
            await queue.Ready.Writer.WriteAsync(message, CancellationToken.None).ConfigureAwait(false);
        }
    }
}
