using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using CloudNative.CloudEvents;
using Messaging.DeadLetters;
using Messaging.Diagnostics;
using Messaging.Hosting;
using Messaging.Tests.Infrastructure;
using Messaging.Topology;
using Messaging.Transport;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace Messaging.Tests.Diagnostics;

/// <summary>The backlog poller: it reads every interval, the gauges report the last values read, a failed read reports nothing.</summary>
public sealed class BacklogPollerTests
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(30);
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.Zero));
    private readonly string _subscription = $"orders.billing-{Guid.NewGuid():N}";

    private (BacklogPoller Poller, BacklogTransport Transport, CapturingLoggerFactory Logs) Create(Action<MessagingMetricsOptions>? metrics = null)
    {
        var model = new MessagingModel();
        model.Subscriptions[_subscription] = new SubscriptionModel(_subscription);
        var options = new MessagingOptions();
        options.Subscriptions[_subscription] = new SubscriptionOptions { Topic = "orders" };
        options.Metrics.BacklogPollingInterval = Interval;
        metrics?.Invoke(options.Metrics);
        var transport = new BacklogTransport();
        var logs = new CapturingLoggerFactory();
        return (new BacklogPoller(transport, model, Options.Create(options), logs, _time), transport, logs);
    }

    /// <summary>Every backlog measurement of this test's subscription, by instrument name, as one collection reports them.</summary>
    private Dictionary<string, (double Value, Dictionary<string, object?> Tags)> Collect()
    {
        var seen = new Dictionary<string, (double, Dictionary<string, object?>)>(StringComparer.Ordinal);
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == MessagingDiagnostics.SourceName && instrument.Name.StartsWith("messaging.subscription.", StringComparison.Ordinal))
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        void Record(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var all = new Dictionary<string, object?>(StringComparer.Ordinal);
            foreach (var tag in tags)
            {
                all[tag.Key] = tag.Value;
            }
            if ((string?)all.GetValueOrDefault("messaging.consumer.group.name") == _subscription)
            {
                seen[instrument.Name] = (value, all);
            }
        }
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => Record(instrument, value, tags));
        listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) => Record(instrument, value, tags));
        listener.Start();
        listener.RecordObservableInstruments();
        return seen;
    }

    [Fact]
    public async Task The_gauges_report_the_last_values_read_with_the_subscription_tags_and_are_refreshed_every_interval()
    {
        var (poller, transport, _) = Create();
        await using var _1 = poller;
        transport.Next = _ => Task.FromResult<SubscriptionBacklog?>(new SubscriptionBacklog(7, 2, TimeSpan.FromSeconds(90)));

        await poller.StartAsync(Wait.TestToken);
        await Wait.UntilAsync(() => Collect().Count == 3, "the first read is reported");
        var first = Collect();
        Assert.Equal(7, first["messaging.subscription.backlog"].Value);
        Assert.Equal(2, first["messaging.subscription.dead_letters"].Value);
        Assert.Equal(90, first["messaging.subscription.oldest_message.age"].Value);
        var tags = first["messaging.subscription.backlog"].Tags;
        Assert.Equal("fake-backlog", tags["messaging.system"]);
        Assert.Equal("orders", tags["messaging.destination.name"]);

        // The next read, one interval later, has no age: that gauge reports nothing for the subscription.
        transport.Next = _ => Task.FromResult<SubscriptionBacklog?>(new SubscriptionBacklog(0, 3, null));
        await Wait.UntilAsync(() =>
        {
            _time.Advance(Interval);
            var now = Collect();
            return now.TryGetValue("messaging.subscription.backlog", out var backlog) && backlog.Value == 0;
        }, "the read after one interval is reported");
        var second = Collect();
        Assert.Equal(3, second["messaging.subscription.dead_letters"].Value);
        Assert.False(second.ContainsKey("messaging.subscription.oldest_message.age"));

        await poller.StopAsync(Wait.TestToken);
        Assert.Empty(Collect());
    }

    [Fact]
    public async Task A_failed_read_reports_nothing_and_warns_once_per_streak_and_the_next_good_read_reports_again()
    {
        var (poller, transport, logs) = Create();
        await using var _1 = poller;
        transport.Next = _ => Task.FromResult<SubscriptionBacklog?>(new SubscriptionBacklog(5, 0, null));
        await poller.StartAsync(Wait.TestToken);
        await Wait.UntilAsync(() => Collect().ContainsKey("messaging.subscription.backlog"), "the first read is reported");

        transport.Next = _ => throw new IOException("broker gone");
        var failedFrom = transport.Calls;
        await Wait.UntilAsync(() =>
        {
            _time.Advance(Interval);
            return transport.Calls >= failedFrom + 3;
        }, "three reads fail");
        Assert.Empty(Collect());
        Assert.Single(logs.Entries, e => e.Level == LogLevel.Warning && e.Message.Contains(_subscription, StringComparison.Ordinal));
        Assert.Contains(logs.Entries, e => e.Level == LogLevel.Debug);

        transport.Next = _ => Task.FromResult<SubscriptionBacklog?>(new SubscriptionBacklog(4, 1, null));
        await Wait.UntilAsync(() =>
        {
            _time.Advance(Interval);
            return Collect().TryGetValue("messaging.subscription.backlog", out var backlog) && backlog.Value == 4;
        }, "the good read after the failures is reported");

        transport.Next = _ => throw new IOException("broker gone again");
        failedFrom = transport.Calls;
        await Wait.UntilAsync(() =>
        {
            _time.Advance(Interval);
            return transport.Calls >= failedFrom + 1 && logs.Entries.Count(e => e.Level == LogLevel.Warning) >= 2;
        }, "a new failure streak warns again");
        Assert.Empty(Collect());
        Assert.Equal(2, logs.Entries.Count(e => e.Level == LogLevel.Warning));
    }

    [Fact]
    public async Task A_transport_that_reports_nothing_has_no_measurement()
    {
        var (poller, transport, _) = Create();
        await using var _1 = poller;
        transport.Next = _ => Task.FromResult<SubscriptionBacklog?>(null);

        await poller.StartAsync(Wait.TestToken);
        await Wait.UntilAsync(() => transport.Calls >= 1, "the first read");

        Assert.Empty(Collect());
    }

    [Theory]
    [InlineData(false, 30)]
    [InlineData(true, 0)]
    public async Task Turned_off_the_poller_never_asks_the_broker(bool backlog, int intervalSeconds)
    {
        var (poller, transport, _) = Create(m =>
        {
            m.Backlog = backlog;
            m.BacklogPollingInterval = TimeSpan.FromSeconds(intervalSeconds);
        });
        await using var _1 = poller;

        await poller.StartAsync(Wait.TestToken);
        _time.Advance(Interval * 3);
        await poller.StopAsync(Wait.TestToken);

        Assert.Equal(0, transport.Calls);
    }

    [Theory]
    [InlineData("00:00:00.050")]
    [InlineData("-00:00:01")]
    [InlineData("2.00:00:00")]
    public void An_invalid_polling_interval_fails_validation_naming_the_setting(string interval)
    {
        var options = new MessagingOptions();
        options.Metrics.BacklogPollingInterval = TimeSpan.Parse(interval, System.Globalization.CultureInfo.InvariantCulture);

        var result = new MessagingOptionsValidator(new MessagingModel()).Validate(null, options);

        Assert.True(result.Failed);
        Assert.Contains("Messaging:Metrics:BacklogPollingInterval", result.FailureMessage, StringComparison.Ordinal);
    }

    [Fact]
    public void The_default_and_zero_polling_intervals_are_valid()
    {
        var model = new MessagingModel();
        model.Transports[new MessagingOptions().Transport] = (_, _) => throw new NotSupportedException();
        var options = new MessagingOptions();
        Assert.True(new MessagingOptionsValidator(model).Validate(null, options).Succeeded);
        options.Metrics.BacklogPollingInterval = TimeSpan.Zero;
        Assert.True(new MessagingOptionsValidator(model).Validate(null, options).Succeeded);
    }

    internal sealed class BacklogTransport : IMessageTransport
    {
        private int _calls;

        public Func<SubscriptionDefinition, Task<SubscriptionBacklog?>> Next { get; set; } = _ => Task.FromResult<SubscriptionBacklog?>(null);

        public int Calls => Volatile.Read(ref _calls);

        public string Name => "fake-backlog";

        public TransportCapabilities Capabilities { get; } = new() { MaxEventSizeBytes = 256 * 1024 };

        public IDeadLetterStore DeadLetters => throw new NotSupportedException();

        public Task<SubscriptionBacklog?> GetBacklogAsync(SubscriptionDefinition subscription, CancellationToken cancellationToken)
        {
            try
            {
                return Next(subscription);
            }
            finally
            {
                Interlocked.Increment(ref _calls);
            }
        }

        public Task ProvisionAsync(MessagingTopology topology, CancellationToken cancellationToken) => Task.CompletedTask;

        public Task PublishAsync(string topic, IReadOnlyList<CloudEvent> events, CancellationToken cancellationToken) => throw new NotSupportedException();

        public Task<ITransportReceiver> StartReceiverAsync(ReceivePipeline pipeline, CancellationToken cancellationToken) => throw new NotSupportedException();

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    internal sealed class CapturingLoggerFactory : ILoggerFactory, ILogger
    {
        public ConcurrentQueue<(LogLevel Level, string Message)> Entries { get; } = new();

        public ILogger CreateLogger(string categoryName) => this;

        public void AddProvider(ILoggerProvider provider)
        {
        }

        public void Dispose()
        {
        }

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Entries.Enqueue((logLevel, formatter(state, exception)));
    }
}
