using Messaging.Transport;

namespace Messaging.Tests.Infrastructure;

/// <summary>
/// A transport's receive loop reduced to what the pipeline calls back: the tests submit messages to the pipeline themselves.
/// Lease renewals are counted on each <see cref="FakeMessage"/>; stop calls are logged.
/// </summary>
internal sealed class FakeReceiver(CallLog log) : ITransportReceiver
{
    private int _renewRounds;

    public StopBehavior StopBehavior { get; init; } = StopBehavior.ReturnUnstarted;

    public TimeSpan? LeaseRenewalInterval { get; init; }

    /// <summary>Runs inside each renewal, after the messages were counted (to report lost leases, for instance).</summary>
    public Action<IReadOnlyList<ReceivedMessage>>? OnRenew { get; set; }

    public int RenewRounds => Volatile.Read(ref _renewRounds);

    public bool ReturnsTogether { get; init; }

    /// <summary>Logs "return-together:A1,A2" and counts a return on each message.</summary>
    public Task ReturnTogetherAsync(IReadOnlyList<ReceivedMessage> messages, CancellationToken cancellationToken)
    {
        log.Add($"return-together:{string.Join(",", messages.Select(m => m.MessageId))}");
        foreach (var message in messages.OfType<FakeMessage>())
        {
            message.RecordReturn();
        }
        return Task.CompletedTask;
    }

    /// <summary>What the broker does with a renewal call, after the messages were counted; answered at once when null.</summary>
    public Func<CancellationToken, Task>? RenewAnswer { get; set; }

    public Task RenewLeasesAsync(IReadOnlyList<ReceivedMessage> messages, CancellationToken cancellationToken)
    {
        foreach (var message in messages.OfType<FakeMessage>())
        {
            message.RecordRenewal();
        }
        OnRenew?.Invoke(messages);
        Interlocked.Increment(ref _renewRounds);
        return RenewAnswer?.Invoke(cancellationToken) ?? Task.CompletedTask;
    }

    public Task StopReceivingAsync(CancellationToken cancellationToken)
    {
        log.Add("stop-receiving");
        return Task.CompletedTask;
    }

    public Task DrainedAsync(CancellationToken cancellationToken)
    {
        log.Add("drained");
        return Task.CompletedTask;
    }

    public ValueTask DisposeAsync()
    {
        log.Add("disposed");
        return ValueTask.CompletedTask;
    }
}
