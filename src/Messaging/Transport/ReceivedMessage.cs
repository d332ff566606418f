using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Envelope;

namespace Messaging.Transport;

/// <summary>
/// One message a transport received from its broker, handed to the <see cref="ReceivePipeline"/>. An adapter derives
/// from it to map its broker's message (<see cref="Decode"/>, <see cref="ReadAttempt"/>) and to implement its settlement
/// primitives. The pipeline calls each primitive at most once per message and only one of them, except that a failed
/// settlement is followed by <see cref="ReturnAsync"/>; adapters keep no settle-once flag of their own.
/// </summary>
public abstract class ReceivedMessage : ITransportDelivery
{
    private const int Unsettled = 0;
    private const int Renewing = 1;
    private const int Settling = 2;
    private const int Settled = 3;
    private const int SettleFailed = 4;
    private const int Released = 5; // taken by the pipeline: returned, aborted, or its lease was lost

    private int _state;
    private ReceivePipeline? _pipeline;
    private CloudEvent? _event;
    private string? _decodeError;
    private int _attempt = 1;

    /// <summary>The broker's own identifier of the message, for logs.</summary>
    public abstract string? MessageId { get; }

    /// <summary>
    /// The delivery attempt (1, 2, 3, ...) as the broker counts it. Read once, when the message enters the pipeline; a value
    /// below 1, or an exception, counts as attempt 1.
    /// </summary>
    protected internal abstract int ReadAttempt();

    /// <summary>
    /// Decodes the CloudEvent. Any exception, of any type, makes the message an invalid one: it is dead-lettered with
    /// reason <see cref="DeadLetterReason.InvalidMessage"/> and the exception's message, and never reaches a handler.
    /// </summary>
    protected internal abstract CloudEvent Decode();

    /// <summary>The ordering key of an ordered subscription; by default the CloudEvent's <c>partitionkey</c> extension.</summary>
    protected internal virtual string? OrderingKey => _event?["partitionkey"] as string is { Length: > 0 } key ? key : null;

    /// <summary>
    /// True when <see cref="RetryAsync"/> keeps the order of the message's ordering key by itself: the broker delivers the
    /// message again before any later message of its key (Pub/Sub with message ordering, an SQS FIFO group, ...), and the
    /// pipeline gives back the later messages of the key it holds. False by default: on an ordered subscription, a failed
    /// attempt of a keyed message is then retried in this process, holding the message (and its lease) through the backoff,
    /// so that no later message of its key runs before it succeeds or is dead-lettered.
    /// </summary>
    protected internal virtual bool RetryKeepsKeyOrder => false;

    /// <summary>Acknowledges the message: it will not be delivered again.</summary>
    protected internal abstract Task CompleteAsync(CancellationToken cancellationToken);

    /// <summary>Has the broker deliver the message again after <paramref name="delay"/>, as attempt <see cref="Attempt"/> + 1.</summary>
    protected internal abstract Task RetryAsync(TimeSpan delay, CancellationToken cancellationToken);

    /// <summary>Moves the message, with its original bytes, to the subscription's dead-letter destination with <paramref name="metadata"/>.</summary>
    protected internal abstract Task DeadLetterAsync(DeadLetterMetadata metadata, CancellationToken cancellationToken);

    /// <summary>
    /// Gives the message back unsettled (a nack, an abandon, a visibility or deadline of zero), so that the broker delivers it
    /// again. Best effort: where this fails, the broker's own lease or connection loss returns it later.
    /// </summary>
    protected internal abstract Task ReturnAsync(CancellationToken cancellationToken);

    /// <summary>The attempt number, from the broker (at least 1).</summary>
    public int Attempt => _attempt;

    /// <summary>The decoded CloudEvent, or null when the message is not a valid one.</summary>
    public CloudEvent? Event => _event;

    /// <summary>When the pipeline received the message (the pipeline's clock).</summary>
    public DateTimeOffset ReceivedAt { get; private set; }

    /// <summary>When its lease was last extended, or <see cref="ReceivedAt"/>.</summary>
    public DateTimeOffset LeasedAt { get; set; }

    /// <summary>
    /// Reports that the broker no longer holds this message for this consumer (its lock or lease expired): its handler's
    /// cancellation token fires, and the settlement the handler makes later is dropped silently, because the broker delivers
    /// the message again with the next attempt number.
    /// </summary>
    public void ReportLeaseLost(string reason)
    {
        if (Interlocked.CompareExchange(ref _state, Released, Renewing) == Renewing
            || Interlocked.CompareExchange(ref _state, Released, Unsettled) == Unsettled)
        {
            _pipeline?.OnLeaseLost(this, reason);
        }
    }

    /// <summary>True until the message is settled, returned or lost; lease renewal only concerns these.</summary>
    public bool IsHeld => Volatile.Read(ref _state) is Unsettled or Renewing;

    internal string? DecodeError => _decodeError;

    internal CancellationTokenSource? HandlerCancellation { get; set; }

    internal bool Started { get; set; }

    internal bool Retried { get; private set; }

    internal string? LaneKey { get; set; }

    /// <summary>Arrival order in the pipeline.</summary>
    internal long Sequence { get; set; }

    internal bool HoldsPlace { get; set; }

    internal void Initialize(ReceivePipeline pipeline, DateTimeOffset now)
    {
        _pipeline = pipeline;
        ReceivedAt = now;
        LeasedAt = now;
        try
        {
            _attempt = Math.Max(1, ReadAttempt());
        }
        catch (Exception)
        {
            _attempt = 1;
        }
        try
        {
            _event = Decode();
        }
        catch (InvalidCloudEventException ex)
        {
            _decodeError = ex.Message;
        }
        catch (Exception ex)
        {
            // Whatever the decoder threw, the message is not something a handler can take.
            _decodeError = $"The message could not be decoded ({ex.GetType().Name}): {ex.Message}";
        }
    }

    /// <summary>Takes the message for a lease renewal; false when it is settled, being settled or already being renewed.</summary>
    internal bool TryBeginRenewal() => Interlocked.CompareExchange(ref _state, Renewing, Unsettled) == Unsettled;

    internal void EndRenewal() => Interlocked.CompareExchange(ref _state, Unsettled, Renewing);

    /// <summary>Takes the message for the pipeline (return or abort); false when a settlement already has it.</summary>
    internal async ValueTask<bool> TryReleaseAsync()
    {
        while (true)
        {
            var state = Interlocked.CompareExchange(ref _state, Released, Unsettled);
            if (state == Unsettled)
            {
                BeginReturn(); // whoever releases it gives it back
                return true;
            }
            if (state != Renewing)
            {
                return false;
            }
            await _pipeline!.RenewalCompletedAsync().ConfigureAwait(false);
        }
    }

    private TaskCompletionSource? _returning;

    /// <summary>Marks the message as being given back; <see cref="ReturnDone"/> completes with <see cref="EndReturn"/>.</summary>
    internal void BeginReturn() =>
        Interlocked.CompareExchange(ref _returning, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously), null);

    internal void EndReturn() => Volatile.Read(ref _returning)?.TrySetResult();

    /// <summary>Completes when a return of this message, by whoever started it, has been answered (or was never started).</summary>
    internal Task ReturnDone => Volatile.Read(ref _returning)?.Task ?? Task.CompletedTask;

    /// <summary>Unsettled, or a settlement that failed: the pipeline must give it back.</summary>
    internal bool NeedsReturn => Volatile.Read(ref _state) is SettleFailed;

    internal bool IsReleased => Volatile.Read(ref _state) == Released;

    /// <summary>Completed, retried or dead-lettered, and the broker took it.</summary>
    internal bool IsSettled => Volatile.Read(ref _state) == Settled;

    internal bool IsUnsettled => Volatile.Read(ref _state) is Unsettled or Renewing;

    private async ValueTask<bool> TryClaimAsync()
    {
        while (true)
        {
            var state = Interlocked.CompareExchange(ref _state, Settling, Unsettled);
            if (state == Unsettled)
            {
                return true;
            }
            if (state != Renewing)
            {
                return false; // settled already, or taken by the pipeline (returned, aborted, lease lost): nothing to do
            }
            // A lease extension for this message is in flight; settling after it means it cannot overwrite the settlement.
            await _pipeline!.RenewalCompletedAsync().ConfigureAwait(false);
        }
    }

    private async Task SettleAsync(Func<ReceivedMessage, CancellationToken, Task> settle, CancellationToken cancellationToken)
    {
        if (!await TryClaimAsync().ConfigureAwait(false))
        {
            return;
        }
        try
        {
            await settle(this, cancellationToken).ConfigureAwait(false);
            Interlocked.Exchange(ref _state, Settled);
        }
        catch
        {
            // Its runner gives it back next; whoever waits for the message waits for that return too.
            BeginReturn();
            Interlocked.Exchange(ref _state, SettleFailed);
            throw;
        }
        finally
        {
            Volatile.Read(ref _settlementWaiter)?.TrySetResult();
        }
    }

    private TaskCompletionSource? _settlementWaiter;

    /// <summary>
    /// Completes when a settlement under way has ended: the broker took it, or it failed and the message is being given back
    /// (then <see cref="ReturnDone"/> completes when that return is answered). At once when no settlement is under way.
    /// </summary>
    internal Task SettlementDone
    {
        get
        {
            if (Volatile.Read(ref _state) != Settling)
            {
                return Task.CompletedTask;
            }
            Interlocked.CompareExchange(ref _settlementWaiter, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously), null);
            // The settlement may have ended before the waiter was in place (the state is written with a full fence first).
            return Volatile.Read(ref _state) == Settling ? _settlementWaiter!.Task : Task.CompletedTask;
        }
    }

    string? ITransportDelivery.DecodeError => _decodeError;

    string ITransportDelivery.Subscription => _pipeline?.Subscription.Name ?? string.Empty;

    bool ITransportDelivery.RetriesInPlace => LaneKey is not null && !RetryKeepsKeyOrder;

    CancellationToken ITransportDelivery.StopRequested => _pipeline?.StopRequested ?? CancellationToken.None;

    Task ITransportDelivery.GiveBackAsync() => _pipeline?.GiveBackAsync(this) ?? Task.CompletedTask;

    Task ITransportDelivery.CompleteAsync(CancellationToken cancellationToken) =>
        SettleAsync(static (m, ct) => m.CompleteAsync(ct), cancellationToken);

    Task ITransportDelivery.RetryAsync(TimeSpan delay, CancellationToken cancellationToken)
    {
        Retried = true;
        return SettleAsync((m, ct) => m.RetryAsync(delay, ct), cancellationToken);
    }

    Task ITransportDelivery.DeadLetterAsync(DeadLetterMetadata metadata, CancellationToken cancellationToken) =>
        SettleAsync((m, ct) => m.DeadLetterAsync(metadata, ct), cancellationToken);
}
