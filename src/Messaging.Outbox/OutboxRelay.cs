using System.Data.Common;
using Messaging.Envelope;
using Messaging.Hosting;
using Messaging.Outbox.Storage;
using Messaging.Publishing;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Messaging.Outbox;

/// <summary>
/// Publishes outbox rows through the transport's durable publish and marks them sent. Instances share the work by topic:
/// a relay takes a lease on a topic (one conditional UPDATE, so only one instance wins) and publishes that topic's rows
/// one after the other in id order, so each topic keeps its write order across instances. A relay that dies keeps its
/// topics until the lease expires; the rows it published but had not marked are published again then (at-least-once).
/// </summary>
internal sealed partial class OutboxRelay(
    OutboxStore store,
    IEventPublisher publisher,
    MessagingModel model,
    OutboxSignal signal,
    IOptions<OutboxOptions> options,
    TimeProvider time,
    ILogger<OutboxRelay> logger) : BackgroundService
{
    // After this process wrote rows, their transaction may commit any moment: poll this often for a short while.
    private static readonly TimeSpan QuickPoll = TimeSpan.FromMilliseconds(20);
    private static readonly TimeSpan QuickPollPeriod = TimeSpan.FromSeconds(2);

    private readonly OutboxOptions _options = options.Value;
    private long _lastCleanup = long.MinValue;

    /// <summary>This relay's identity in the lease table.</summary>
    public string Owner { get; } = $"{Environment.MachineName}/{Environment.ProcessId}/{Guid.NewGuid():N}";

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!_options.RelayEnabled)
        {
            return;
        }
        var failures = 0;
        while (!stoppingToken.IsCancellationRequested)
        {
            var pass = new RelayPass();
            try
            {
                pass = await RelayOnceAsync(stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                // The database itself failed (a topic's publish failure is counted in the pass instead).
                LogRelayFailed(logger, ex);
                pass = new RelayPass(0, 1);
            }
            await CleanupIfDueAsync(stoppingToken).ConfigureAwait(false);
            if (pass.Relayed > 0)
            {
                failures = 0;
                continue;
            }
            failures = pass.Failed > 0 ? failures + 1 : 0;
            var wait = failures > 0
                ? TimeSpan.FromMilliseconds(Math.Min(_options.PollingInterval.TotalMilliseconds * Math.Pow(2, Math.Min(failures, 6)), 30_000))
                : signal.WrittenWithin(QuickPollPeriod) && QuickPoll < _options.PollingInterval ? QuickPoll : _options.PollingInterval;
            try
            {
                await signal.WaitAsync(wait, stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task CleanupIfDueAsync(CancellationToken stoppingToken)
    {
        if (_lastCleanup != long.MinValue && time.GetElapsedTime(_lastCleanup) < _options.CleanupInterval)
        {
            return;
        }
        _lastCleanup = time.GetTimestamp();
        try
        {
            await CleanupOnceAsync(stoppingToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (!stoppingToken.IsCancellationRequested)
        {
            LogCleanupFailed(logger, ex);
        }
    }

    /// <summary>What one pass did: rows published, topics that failed.</summary>
    internal readonly record struct RelayPass(int Relayed = 0, int Failed = 0);

    /// <summary>
    /// One pass: every topic with unsent rows that this relay can lease is drained. A topic whose publish fails is logged and
    /// left for the next pass; the other topics go on.
    /// </summary>
    internal async Task<RelayPass> RelayOnceAsync(CancellationToken cancellationToken)
    {
        await using var connection = store.Dialect.CreateConnection();
        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        var relayed = 0;
        var failed = 0;
        foreach (var topic in await store.PendingTopicsAsync(connection, cancellationToken).ConfigureAwait(false))
        {
            try
            {
                relayed += await RelayTopicAsync(connection, topic, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (!cancellationToken.IsCancellationRequested && ex is not System.Data.Common.DbException)
            {
                failed++;
                LogTopicFailed(logger, ex, topic);
            }
        }
        return new RelayPass(relayed, failed);
    }

    private async Task<int> RelayTopicAsync(DbConnection connection, string topic, CancellationToken cancellationToken)
    {
        var leaseMs = (long)_options.LeaseDuration.TotalMilliseconds;
        var now = Now();
        if (!await store.TryLeaseAsync(connection, topic, Owner, now, now + leaseMs, cancellationToken).ConfigureAwait(false))
        {
            return 0;
        }
        var renewedAt = time.GetTimestamp();
        var sent = 0;
        var failed = true;
        try
        {
            while (true)
            {
                var rows = await store.ReadPendingAsync(connection, topic, _options.BatchSize, cancellationToken).ConfigureAwait(false);
                if (rows.Count == 0)
                {
                    break;
                }
                var published = new List<long>(rows.Count);
                var lost = false;
                try
                {
                    foreach (var row in rows)
                    {
                        // Renew well before the lease runs out, so no other instance takes the topic while this one publishes.
                        if (time.GetElapsedTime(renewedAt) > _options.LeaseDuration / 3)
                        {
                            if (!await store.RenewLeaseAsync(connection, topic, Owner, Now() + leaseMs, cancellationToken).ConfigureAwait(false))
                            {
                                lost = true;
                                break;
                            }
                            renewedAt = time.GetTimestamp();
                        }
                        var cloudEvent = StructuredJson.Decode(row.Payload, StructuredJson.MediaType, model.ExtensionAttributes);
                        // One at a time: a batch may be spread over several broker channels and arrive out of order.
                        await publisher.PublishAsync(topic, cloudEvent, cancellationToken).ConfigureAwait(false);
                        published.Add(row.Id);
                    }
                }
                finally
                {
                    // What the broker accepted is marked sent even when a later publish failed, so it is not sent again.
                    await store.MarkSentAsync(connection, published, Now(), CancellationToken.None).ConfigureAwait(false);
                    sent += published.Count;
                }
                if (lost)
                {
                    LogLeaseLost(logger, topic);
                    failed = false;
                    return sent;
                }
                if (rows.Count < _options.BatchSize)
                {
                    break;
                }
            }
            failed = false;
        }
        finally
        {
            try
            {
                await store.ReleaseLeaseAsync(connection, topic, Owner, CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception ex) when (failed)
            {
                // The original failure matters more; the lease expires by itself.
                LogReleaseFailed(logger, ex, topic);
            }
        }
        return sent;
    }

    /// <summary>Deletes sent rows and inbox rows past their retention.</summary>
    internal async Task<(int Sent, int Handled)> CleanupOnceAsync(CancellationToken cancellationToken)
    {
        await using var connection = store.Dialect.CreateConnection();
        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        var now = Now();
        var removed = await store.CleanupAsync(connection, now - (long)_options.Retention.TotalMilliseconds,
            now - (long)_options.InboxRetention.TotalMilliseconds, cancellationToken).ConfigureAwait(false);
        if (removed.Sent > 0 || removed.Handled > 0)
        {
            LogCleanedUp(logger, removed.Sent, removed.Handled);
        }
        return removed;
    }

    private long Now() => time.GetUtcNow().ToUnixTimeMilliseconds();

    [LoggerMessage(1, LogLevel.Warning, "The outbox relay could not read the outbox; it tries again")]
    private static partial void LogRelayFailed(ILogger logger, Exception exception);

    [LoggerMessage(5, LogLevel.Warning, "The outbox relay could not publish to topic {Topic}; its rows stay in the outbox and are tried again")]
    private static partial void LogTopicFailed(ILogger logger, Exception exception, string topic);

    [LoggerMessage(6, LogLevel.Warning, "The outbox clean-up failed; it runs again after the clean-up interval")]
    private static partial void LogCleanupFailed(ILogger logger, Exception exception);

    [LoggerMessage(2, LogLevel.Warning, "The outbox relay lost its lease on topic {Topic} (its lease expired and another instance took the topic); it stops relaying it")]
    private static partial void LogLeaseLost(ILogger logger, string topic);

    [LoggerMessage(3, LogLevel.Debug, "The outbox relay could not release its lease on topic {Topic}; it expires by itself")]
    private static partial void LogReleaseFailed(ILogger logger, Exception exception, string topic);

    [LoggerMessage(4, LogLevel.Debug, "Outbox clean-up deleted {Sent} sent row(s) and {Handled} inbox row(s) past their retention")]
    private static partial void LogCleanedUp(ILogger logger, int sent, int handled);
}
