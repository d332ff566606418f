using System.Diagnostics;
using CloudNative.CloudEvents;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.ConformanceTests.Transports;
using Messaging.Publishing;
using Messaging.RabbitMQ;
using Messaging.Topology;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Messaging.ConformanceTests.RabbitMq;

/// <summary>
/// Faults of a production RabbitMQ, caused on the local broker with rabbitmqctl. They run in the RabbitMQ collection, so no
/// other case of this broker runs meanwhile (the memory alarm blocks every publisher of the broker).
/// </summary>
[Collection(RabbitMqCollection.Name)]
public sealed class RabbitMqFaultTests(RabbitMqFixture fixture) : IClassFixture<RabbitMqFixture>
{
    private static readonly string Uri = Environment.GetEnvironmentVariable("MESSAGING_RABBITMQ_URI") ?? "amqp://guest:guest@127.0.0.1:5672/";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private void RequireControl()
    {
        var reason = fixture.UnavailableReason ?? (fixture.CanRestartBroker ? null : "rabbitmqctl is not available to cause broker faults.");
        if (reason is not null)
        {
            Assert.SkipWhen(Environment.GetEnvironmentVariable("MESSAGING_CONFORMANCE_REQUIRE") is null, reason);
            Assert.Fail(reason);
        }
    }

    private static CloudEvent Event() => new()
    {
        Id = Guid.NewGuid().ToString(),
        Source = new System.Uri("urn:test"),
        Type = "com.example.fault",
        DataContentType = "text/plain",
        Data = "x"u8.ToArray(),
    };

    [Fact(Timeout = 180_000)]
    public async Task A_publish_the_broker_blocks_fails_within_PublishTimeout_honours_its_token_and_publishing_resumes_after_the_alarm()
    {
        RequireControl();
        var topic = "ct-blocked-" + Guid.NewGuid().ToString("N")[..8];
        var subscription = topic + "-sub";
        var timeout = TimeSpan.FromSeconds(3);
        var logs = new CapturingLoggerFactory();
        await using var transport = new RabbitMqTransport(new RabbitMqTransportOptions { Uri = Uri, PublishTimeout = timeout }, [], logs);
        // A publisher whose timeout is far beyond the test's waits: a publish of it that ends early can only have ended by its token.
        await using var patient = new RabbitMqTransport(new RabbitMqTransportOptions { Uri = Uri, PublishTimeout = TimeSpan.FromSeconds(60) }, [], logs);
        await transport.ProvisionAsync(new MessagingTopology([topic], [new SubscriptionDefinition { Name = subscription, Topic = topic }]), Ct);
        // The publishing connections exist before the alarm.
        await transport.PublishAsync(topic, [Event()], Ct);
        await patient.PublishAsync(topic, [Event()], Ct);
        try
        {
            await fixture.SetMemoryAlarmAsync(on: true, Ct);

            // Without a deadline of its own the publish waited for the alarm to clear (914 s in the report); now PublishTimeout bounds it.
            // The 30 s wait is only a guard against that hang (its TimeoutException does not name PublishTimeout): a loaded machine
            // may answer well after the 3 s.
            var watch = Stopwatch.StartNew();
            var failed = await Assert.ThrowsAsync<TimeoutException>(() => transport.PublishAsync(topic, [Event()], Ct).WaitAsync(TimeSpan.FromSeconds(30), Ct));
            Assert.Contains("PublishTimeout", failed.Message, StringComparison.Ordinal);
            Assert.True(transport.IsTransient(failed));
            Assert.True(watch.Elapsed >= timeout - TimeSpan.FromMilliseconds(200), $"it failed after {watch.Elapsed}, before its timeout");

            // The caller's token is honoured at any time, well before the timeout: the patient publisher's 60 s timeout cannot end
            // this publish within the 30 s wait, so only its token can.
            using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => patient.PublishAsync(topic, [Event()], cancel.Token).WaitAsync(TimeSpan.FromSeconds(30), Ct));

            Assert.Contains(logs.Warnings, w => w.Contains("blocks publishing", StringComparison.Ordinal));
        }
        finally
        {
            await fixture.SetMemoryAlarmAsync(on: false, CancellationToken.None);
        }
        // Once the alarm is cleared, publishing works again on the same transport.
        await Wait.UntilAsync(async () =>
        {
            try
            {
                await transport.PublishAsync(topic, [Event()], Ct);
                return true;
            }
            catch (TimeoutException)
            {
                return false;
            }
        }, ok => ok, "a publish succeeds after the alarm clears", TimeSpan.FromSeconds(30));
        await fixture.DeleteSubscriptionAsync(topic, subscription);
    }

    [Fact(Timeout = 240_000)]
    public async Task A_host_stopping_while_the_broker_blocks_publishers_stops_within_its_shutdown_timeout()
    {
        RequireControl();
        var topic = "ct-blockstop-" + Guid.NewGuid().ToString("N")[..8];
        var subscription = topic + "-sub";
        var publishing = new TaskCompletionSource();
        var probe = new Probe
        {
            // The handler publishes, as a payment handler would; under the alarm that publish cannot complete.
            Behaviour = async (context, ct) =>
            {
                publishing.TrySetResult();
                var publisher = context.Services.GetService(typeof(IEventPublisher)) as IEventPublisher;
                await publisher!.PublishAsync(topic, Event(), ct);
            },
        };
        var host = await ConformanceHost.StartAsync(fixture, probe,
            m => m.AddSubscription(subscription, topic, s => s.HandleCloudEvents<ProbeHandler>()),
            // A PublishTimeout far beyond the bound on the stop below: a stop that waited for the blocked publish to time out fails it.
            settings: new Dictionary<string, string?> { ["Messaging:RabbitMQ:PublishTimeout"] = "00:02:00" });
        try
        {
            await host.Publisher.PublishAsync(topic, Event(), Ct);
            await fixture.SetMemoryAlarmAsync(on: true, Ct);
            // May or may not get through before the block; given up after 30 s rather than waiting out the publish timeout.
            using (var brief = CancellationTokenSource.CreateLinkedTokenSource(Ct))
            {
                brief.CancelAfter(TimeSpan.FromSeconds(30));
                await host.Publisher.PublishAsync(topic, Event(), brief.Token).ContinueWith(_ => { }, Ct);
            }
            await publishing.Task.WaitAsync(TimeSpan.FromSeconds(30), Ct);
            // The shutdown timeout is 3 s; the bound guards against a stop that hangs on the blocked publish, not for speed.
            var watch = Stopwatch.StartNew();
            await host.StopAsync(TimeSpan.FromSeconds(3)).WaitAsync(TimeSpan.FromSeconds(45), Ct);
            Assert.True(watch.Elapsed < TimeSpan.FromSeconds(45), $"the host took {watch.Elapsed} to stop");
        }
        finally
        {
            await fixture.SetMemoryAlarmAsync(on: false, CancellationToken.None);
            await host.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
            await fixture.DeleteSubscriptionAsync(topic, subscription);
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task A_consumer_the_broker_cancels_consumes_again_once_its_queue_is_back_with_a_warning_naming_the_fault()
    {
        RequireControl();
        var topic = "ct-cancel-" + Guid.NewGuid().ToString("N")[..8];
        var subscription = topic + "-sub";
        var logs = new CapturingLoggerFactory();
        var probe = new Probe();
        await using var host = await ConformanceHost.StartAsync(fixture, probe,
            m => m.AddSubscription(subscription, topic, s => s.HandleCloudEvents<ProbeHandler>()),
            services: s => s.AddSingleton<ILoggerProvider>(logs));
        try
        {
            await host.Publisher.PublishAsync(topic, Event(), Ct);
            await Wait.UntilAsync(() => probe.Handled.Count == 1, "the first event is handled");

            // Someone deletes the subscription's queue: RabbitMQ cancels the consumer (basic.cancel), which the client does not recover.
            await fixture.DeleteQueueAsync(RabbitMqNames.Queue(subscription), Ct);
            await Wait.UntilAsync(() => logs.Warnings.Any(w => w.Contains(subscription, StringComparison.Ordinal) && w.Contains("cancelled", StringComparison.Ordinal)),
                "a warning names the cancelled consumer");

            // The queue is provisioned again; the consumer resumes by itself and nothing published afterwards is left behind.
            await host.Transport.ProvisionAsync(new MessagingTopology([topic], [new SubscriptionDefinition { Name = subscription, Topic = topic }]), Ct);
            var after = Enumerable.Range(0, 5).Select(_ => Event()).ToList();
            await host.Publisher.PublishBatchAsync(topic, after, Ct);
            await Wait.UntilAsync(() => after.All(e => probe.Handled.Any(h => h.Event.Id == e.Id)), "events published after the queue is back are handled", TimeSpan.FromSeconds(30));
        }
        finally
        {
            await fixture.DeleteSubscriptionAsync(topic, subscription);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_batch_of_any_size_completes_whatever_the_number_of_publisher_channels()
    {
        RequireControl();
        var topic = "ct-batch-" + Guid.NewGuid().ToString("N")[..8];
        await using var transport = new RabbitMqTransport(new RabbitMqTransportOptions { Uri = Uri, PublisherChannels = 4, PublishTimeout = TimeSpan.FromSeconds(10) }, [], new CapturingLoggerFactory());
        await transport.ProvisionAsync(new MessagingTopology([topic], []), Ct);
        try
        {
            // 5 over 4 channels once made an empty fourth chunk that never completed: the publish hung.
            foreach (var size in new[] { 1, 2, 3, 4, 5, 6, 7, 9, 10, 13 })
            {
                await transport.PublishAsync(topic, Enumerable.Range(0, size).Select(_ => Event()).ToList(), Ct);
            }
        }
        finally
        {
            await fixture.DeleteSubscriptionAsync(topic, topic + "-none");
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task A_retry_queue_that_could_not_be_declared_is_declared_again_on_the_next_retry()
    {
        RequireControl();
        var topic = "ct-retryq-" + Guid.NewGuid().ToString("N")[..8];
        var subscription = topic + "-sub";
        var delay = TimeSpan.FromMilliseconds(300);
        // A queue of that name with other arguments: the broker refuses the retry queue's declaration (406).
        await fixture.DeclareClassicQueueAsync(RabbitMqNames.RetryQueue(subscription, delay), Ct);
        var blocked = 1;
        var probe = new Probe
        {
            Behaviour = (_, _) => Volatile.Read(ref blocked) == 1 ? throw new InvalidOperationException("not yet") : Task.CompletedTask,
        };
        await using var host = await ConformanceHost.StartAsync(fixture, probe,
            m => m.AddSubscription(subscription, topic, s => s.HandleCloudEvents<ProbeHandler>().WithMaxAttempts(50).WithBackoff(Messaging.Policy.Backoff.Fixed(delay))),
            settings: new Dictionary<string, string?> { ["Messaging:RabbitMQ:CrashDeliveryLimit"] = "50" });
        try
        {
            var sent = Event();
            await host.Publisher.PublishAsync(topic, sent, Ct);
            // Each failed retry gives the event back to the queue (its declaration failed, so the copy could not be sent).
            await Wait.UntilAsync(() => probe.Attempts.Count >= 2, "the event comes back after a retry that could not be scheduled");
            await fixture.DeleteQueueAsync(RabbitMqNames.RetryQueue(subscription, delay), Ct);
            Volatile.Write(ref blocked, 0);
            // Remembering the failed declaration would fail every later retry too; declared again, the retry goes through.
            await Wait.UntilAsync(() => probe.Handled.Any(h => h.Event.Id == sent.Id), "the event is handled once its retry queue could be declared", TimeSpan.FromSeconds(60));
        }
        finally
        {
            await fixture.DeleteQueueAsync(RabbitMqNames.RetryQueue(subscription, delay), CancellationToken.None);
            await fixture.DeleteSubscriptionAsync(topic, subscription);
        }
    }
}
