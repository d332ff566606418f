using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Messaging.Transport;

/// <summary>
/// The receive loops of a transport that pulls from its broker (SQS, Service Bus, the in-memory queue): each loop reserves
/// places in the <see cref="ReceivePipeline"/>, asks the broker for at most that many messages, submits what it gets, and
/// after a failed receive backs off (doubling, bounded) and goes on, so a broker that is away for a while never ends
/// consumption. Failing and recovered receives are reported to the pipeline's health state
/// (<see cref="ReceivePipeline.ReportReceiveFailing"/>). Written once here, so the adapters only say how to receive and how to map a message.
/// </summary>
/// <typeparam name="T">The broker client's message type.</typeparam>
public sealed partial class PullReceiveLoop<T> : IAsyncDisposable
{
    private static readonly TimeSpan FirstBackoff = TimeSpan.FromMilliseconds(200);
    private readonly ReceivePipeline _pipeline;
    private readonly string _source;
    private readonly int _maxPerReceive;
    private readonly Func<int, CancellationToken, Task<IReadOnlyList<T>>> _receive;
    private readonly Func<T, ReceivedMessage> _map;
    private readonly ILogger _logger;
    private readonly TimeSpan _maxBackoff;
    private readonly CancellationTokenSource _stop = new();
    private Task[] _loops = [];

    /// <param name="pipeline">The pipeline the messages go to.</param>
    /// <param name="source">What is received from (a queue or entity name), for logs.</param>
    /// <param name="maxPerReceive">The most messages one receive call may ask for.</param>
    /// <param name="receive">Receives at most the given number of messages; may return none (a long poll that timed out).</param>
    /// <param name="map">Wraps a broker message for the pipeline.</param>
    /// <param name="logger">Where failed receives are reported.</param>
    /// <param name="maxBackoff">The longest pause after failed receives (default 10 s).</param>
    public PullReceiveLoop(ReceivePipeline pipeline, string source, int maxPerReceive, Func<int, CancellationToken, Task<IReadOnlyList<T>>> receive,
        Func<T, ReceivedMessage> map, ILogger? logger = null, TimeSpan? maxBackoff = null)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        _pipeline = pipeline;
        _source = source;
        _maxPerReceive = Math.Max(1, maxPerReceive);
        _receive = receive;
        _map = map;
        _logger = logger ?? NullLogger.Instance;
        _maxBackoff = maxBackoff ?? TimeSpan.FromSeconds(10);
    }

    /// <summary>Starts <paramref name="loops"/> loops (receive calls in flight at once).</summary>
    public void Start(int loops = 1) =>
        _loops = Enumerable.Range(0, Math.Max(1, loops)).Select(_ => Task.Run(LoopAsync)).ToArray();

    private async Task LoopAsync()
    {
        var token = _stop.Token;
        var backoff = FirstBackoff;
        var failing = false;
        while (!token.IsCancellationRequested)
        {
            int places;
            try
            {
                places = await _pipeline.ReserveAsync(_maxPerReceive, token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            IReadOnlyList<T> received;
            try
            {
                received = await _receive(places, token).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                _pipeline.CancelReservation(places);
                if (token.IsCancellationRequested)
                {
                    return;
                }
                failing = true;
                LogReceiveFailed(ex, _source, _pipeline.Subscription.Name, backoff);
                _pipeline.ReportReceiveFailing($"{ex.GetType().Name}: {ex.Message}", _source);
                try
                {
                    await Task.Delay(backoff, _pipeline.Time, token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, _maxBackoff.Ticks));
                continue;
            }
            if (failing)
            {
                failing = false;
                LogReceiveRecovered(_source, _pipeline.Subscription.Name);
                _pipeline.ReportReceiveRecovered(_source);
            }
            backoff = FirstBackoff;
            _pipeline.CancelReservation(places - Math.Min(places, received.Count));
            // All at once: messages of one key received together take their lane's order before any of them starts.
            _pipeline.SubmitAll(received.Select(_map).ToList(), reserved: true);
        }
    }

    /// <summary>Stops the loops: no receive starts after this; waits for the ones in flight to end.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (!_stop.IsCancellationRequested)
        {
            await _stop.CancelAsync().ConfigureAwait(false);
        }
        await Task.WhenAll(_loops).WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Stops the loops without waiting longer than a few seconds.</summary>
    public async ValueTask DisposeAsync()
    {
        if (!_stop.IsCancellationRequested)
        {
            await _stop.CancelAsync().ConfigureAwait(false);
        }
        await Task.WhenAny(Task.WhenAll(_loops), Task.Delay(TimeSpan.FromSeconds(10), _pipeline.Time)).ConfigureAwait(false);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Receiving from {Source} for subscription {Subscription} failed; trying again in {Delay}")]
    private partial void LogReceiveFailed(Exception exception, string source, string subscription, TimeSpan delay);

    [LoggerMessage(Level = LogLevel.Information, Message = "Receiving from {Source} for subscription {Subscription} works again")]
    private partial void LogReceiveRecovered(string source, string subscription);
}
