using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Transport;

namespace Messaging.Tests.Infrastructure;

/// <summary>
/// A received message whose settlement primitives only count their calls (thread-safe) and log them, so that tests can
/// assert "settled exactly once". A primitive can be told to throw.
/// </summary>
internal sealed class FakeMessage : ReceivedMessage
{
    private readonly string? _orderingKey;
    private readonly CallLog? _log;
    private readonly TaskCompletionSource _firstCall = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _completeCalls;
    private int _retryCalls;
    private int _deadLetterCalls;
    private int _returnCalls;
    private int _renewals;

    public FakeMessage(string id, string? orderingKey = null, CallLog? log = null)
    {
        Id = id;
        _orderingKey = orderingKey;
        _log = log;
    }

    public string Id { get; }

    /// <summary>The ordering key the message carries (null: none).</summary>
    public string? Key => _orderingKey;

    public override string? MessageId => Id;

    /// <summary>What <see cref="ReadAttempt"/> does; 1 by default.</summary>
    public Func<int> AttemptReader { get; init; } = static () => 1;

    /// <summary>What <see cref="Decode"/> does; a valid CloudEvent with the message's id by default.</summary>
    public Func<CloudEvent>? Decoder { get; init; }

    public Exception? CompleteFailure { get; init; }

    public Exception? RetryFailure { get; init; }

    public Exception? DeadLetterFailure { get; init; }

    public int CompleteCalls => Volatile.Read(ref _completeCalls);

    public int RetryCalls => Volatile.Read(ref _retryCalls);

    public int DeadLetterCalls => Volatile.Read(ref _deadLetterCalls);

    public int ReturnCalls => Volatile.Read(ref _returnCalls);

    /// <summary>Calls of every settlement primitive together, <see cref="ReturnAsync"/> included.</summary>
    public int SettlementCalls => CompleteCalls + RetryCalls + DeadLetterCalls + ReturnCalls;

    /// <summary>How many times the receiver was asked to extend this message's lease.</summary>
    public int Renewals => Volatile.Read(ref _renewals);

    public DeadLetterMetadata? DeadLetterMetadata { get; private set; }

    public TimeSpan? RetryDelay { get; private set; }

    /// <summary>Completes at the first call of any settlement primitive (<see cref="ReturnAsync"/> included).</summary>
    public Task FirstSettlementCall => _firstCall.Task;

    public static CloudEvent ValidEvent(string id) => new()
    {
        Id = id,
        Source = new Uri("urn:messaging-tests"),
        Type = "com.example.test",
    };

    public void RecordRenewal() => Interlocked.Increment(ref _renewals);

    /// <summary>Counts a return made by the receiver for several messages at once.</summary>
    public void RecordReturn()
    {
        Interlocked.Increment(ref _returnCalls);
        _firstCall.TrySetResult();
    }

    protected internal override string? OrderingKey => _orderingKey;

    /// <summary>What <see cref="RetryKeepsKeyOrder"/> says: false (the default of a transport) unless set.</summary>
    public bool BrokerRetryKeepsKeyOrder { get; init; }

    protected internal override bool RetryKeepsKeyOrder => BrokerRetryKeepsKeyOrder;

    protected internal override int ReadAttempt() => AttemptReader();

    protected internal override CloudEvent Decode() => Decoder is null ? ValidEvent(Id) : Decoder();

    /// <summary>When set, <see cref="CompleteAsync"/> is answered only once this completes (a slow broker), then fails with <see cref="CompleteFailure"/> if set.</summary>
    public Task? CompleteAnswer { get; init; }

    protected internal override async Task CompleteAsync(CancellationToken cancellationToken)
    {
        var recorded = Record(ref _completeCalls, "complete", CompleteAnswer is null ? CompleteFailure : null);
        if (CompleteAnswer is not null)
        {
            await CompleteAnswer;
            if (CompleteFailure is not null)
            {
                throw CompleteFailure;
            }
        }
        await recorded;
    }

    protected internal override Task RetryAsync(TimeSpan delay, CancellationToken cancellationToken)
    {
        RetryDelay = delay;
        return Record(ref _retryCalls, "retry", RetryFailure);
    }

    protected internal override Task DeadLetterAsync(DeadLetterMetadata metadata, CancellationToken cancellationToken)
    {
        DeadLetterMetadata = metadata;
        return Record(ref _deadLetterCalls, "dead-letter", DeadLetterFailure);
    }

    /// <summary>When set, <see cref="ReturnAsync"/> is answered only once this completes (a slow broker); logs "returned:id" then.</summary>
    public Task? ReturnAnswer { get; init; }

    protected internal override async Task ReturnAsync(CancellationToken cancellationToken)
    {
        await Record(ref _returnCalls, "return", null);
        if (ReturnAnswer is not null)
        {
            await ReturnAnswer;
            _log?.Add($"returned:{Id}");
        }
    }

    private Task Record(ref int counter, string call, Exception? failure)
    {
        Interlocked.Increment(ref counter);
        _log?.Add($"{call}:{Id}");
        _firstCall.TrySetResult();
        return failure is null ? Task.CompletedTask : Task.FromException(failure);
    }

    public override string ToString() =>
        $"{Id} (complete {CompleteCalls}, retry {RetryCalls}, dead-letter {DeadLetterCalls}, return {ReturnCalls}, renewals {Renewals})";
}
