using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Messaging.Hosting;
using Messaging.Topology;
using Messaging.Transport;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Messaging.Diagnostics;

/// <summary>
/// Reads the backlog of every subscription the host consumes from the broker every
/// <see cref="MessagingMetricsOptions.BacklogPollingInterval"/> and keeps the last values for the backlog gauges. A
/// subscription whose read fails reports nothing until a read succeeds again (no stale numbers); the failure is logged
/// as a warning once per streak of failures, then at debug level.
/// </summary>
internal sealed partial class BacklogPoller(
    IMessageTransport transport,
    MessagingModel model,
    IOptions<MessagingOptions> options,
    ILoggerFactory loggerFactory,
    TimeProvider time) : IHostedService, IAsyncDisposable
{
    /// <summary>The longest one read of one subscription may take.</summary>
    private static readonly TimeSpan ReadTimeout = TimeSpan.FromSeconds(30);

    private static readonly ConcurrentDictionary<BacklogPoller, byte> Running = new();

    private readonly ILogger _logger = loggerFactory.CreateLogger("Messaging");
    private readonly string _system = transport.Name;
    private readonly ConcurrentDictionary<string, Reading> _readings = new(StringComparer.Ordinal);
    private readonly HashSet<string> _failing = new(StringComparer.Ordinal);
    private CancellationTokenSource? _stopping;
    private Task? _loop;

    private sealed record Reading(SubscriptionDefinition Subscription, SubscriptionBacklog Backlog);

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var settings = options.Value;
        if (!settings.Metrics.BacklogEnabled)
        {
            return Task.CompletedTask;
        }
        _ = MessagingDiagnostics.SubscriptionBacklog; // creates the gauges with the meter
        var subscriptions = model.BuildTopology(settings).Subscriptions;
        _stopping = new CancellationTokenSource();
        Running.TryAdd(this, 0);
        _loop = RunAsync(subscriptions, settings.Metrics.BacklogPollingInterval, _stopping.Token);
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        Running.TryRemove(this, out _);
        _readings.Clear();
        if (_stopping is null || _loop is null)
        {
            return;
        }
        await _stopping.CancelAsync().ConfigureAwait(false);
        await _loop.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    public ValueTask DisposeAsync()
    {
        Running.TryRemove(this, out _);
        _readings.Clear();
        _stopping?.Cancel();
        _stopping?.Dispose();
        _stopping = null;
        return ValueTask.CompletedTask;
    }

    /// <summary>The measurements of one gauge: the last value read of every subscription of every running poller.</summary>
    internal static IEnumerable<Measurement<T>> Observe<T>(Func<SubscriptionBacklog, T?> select)
        where T : struct
    {
        foreach (var poller in Running.Keys)
        {
            var system = poller._system;
            foreach (var reading in poller._readings.Values)
            {
                if (select(reading.Backlog) is { } value)
                {
                    yield return new Measurement<T>(value,
                        new KeyValuePair<string, object?>("messaging.system", system),
                        new KeyValuePair<string, object?>("messaging.destination.subscription.name", reading.Subscription.Name),
                        new KeyValuePair<string, object?>("messaging.consumer.group.name", reading.Subscription.Name),
                        new KeyValuePair<string, object?>("messaging.destination.name", reading.Subscription.Topic));
                }
            }
        }
    }

    private async Task RunAsync(IReadOnlyList<SubscriptionDefinition> subscriptions, TimeSpan interval, CancellationToken cancellationToken)
    {
        await Task.Yield();
        while (!cancellationToken.IsCancellationRequested)
        {
            foreach (var subscription in subscriptions)
            {
                await PollAsync(subscription, cancellationToken).ConfigureAwait(false);
            }
            try
            {
                await Task.Delay(interval, time, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task PollAsync(SubscriptionDefinition subscription, CancellationToken cancellationToken)
    {
        try
        {
            using var bounded = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            bounded.CancelAfter(ReadTimeout);
            var backlog = await transport.GetBacklogAsync(subscription, bounded.Token).WaitAsync(bounded.Token).ConfigureAwait(false);
            if (backlog is null)
            {
                _readings.TryRemove(subscription.Name, out _);
            }
            else
            {
                _readings[subscription.Name] = new Reading(subscription, backlog);
            }
            if (_failing.Remove(subscription.Name))
            {
                LogBacklogRecovered(subscription.Name, transport.Name);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Stopping.
        }
        catch (Exception ex)
        {
            // Report nothing rather than a number that may be out of date.
            _readings.TryRemove(subscription.Name, out _);
            if (_failing.Add(subscription.Name))
            {
                LogBacklogFailed(ex, subscription.Name, transport.Name);
            }
            else
            {
                LogBacklogStillFailing(ex, subscription.Name, transport.Name);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not read the backlog of subscription {Subscription} from {Transport}; its backlog gauges report nothing until a read succeeds")]
    private partial void LogBacklogFailed(Exception exception, string subscription, string transport);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Still cannot read the backlog of subscription {Subscription} from {Transport}")]
    private partial void LogBacklogStillFailing(Exception exception, string subscription, string transport);

    [LoggerMessage(Level = LogLevel.Information, Message = "Reading the backlog of subscription {Subscription} from {Transport} works again")]
    private partial void LogBacklogRecovered(string subscription, string transport);
}
