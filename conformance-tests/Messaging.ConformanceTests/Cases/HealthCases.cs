using Messaging.ConformanceTests.Infrastructure;
using Messaging.Health;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Messaging.ConformanceTests.Cases;

/// <summary>
/// The messaging health checks (<c>AddMessagingHealthChecks</c>) on each transport: healthy while everything runs, a
/// consumer that stops or keeps failing to receive reported by name, a dead letter turning the dead-letter check degraded.
/// </summary>
public abstract partial class ConformanceSuite<TFixture>
{
    /// <summary>Short, so that a lasting fault is seen as unhealthy within the waits.</summary>
    private static readonly TimeSpan HealthGracePeriod = TimeSpan.FromSeconds(2);

    private const string RejectedType = "com.example.conformance.health.reject-me";

    private Task<ConformanceHost> StartWithHealthChecksAsync(Probe probe, string topic, string subscription) =>
        ConformanceHost.StartAsync(Fixture, probe, Subscribe(topic, subscription), services => services.AddHealthChecks().AddMessagingHealthChecks(o =>
        {
            o.ConsumerFailureGracePeriod = HealthGracePeriod;
            o.DeadLetterDegradedThreshold = 1;
            // Generous: a loaded machine must not turn a slow answer into an unhealthy broker.
            o.CheckTimeout = TimeSpan.FromSeconds(20);
        }));

    private static Task<HealthReport> HealthAsync(ConformanceHost host) =>
        host.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync(Ct);

    private static string Describe(HealthReport report) =>
        string.Join(" | ", report.Entries.Select(e => $"{e.Key}={e.Value.Status}: {e.Value.Description}"));

    private static Task<HealthReport> HealthUntilAsync(ConformanceHost host, Func<HealthReport, bool> condition, string what, TimeSpan? timeout = null) =>
        Wait.UntilAsync(() => HealthAsync(host), condition, what, timeout ?? TimeSpan.FromSeconds(60));

    private static HealthStatus StatusOf(HealthReport report, string check) => report.Entries[check].Status;

    [Fact(Timeout = 180_000)]
    public Task Health_a_running_host_is_healthy_and_a_dead_letter_degrades_the_dead_letter_check() => Case(async () =>
    {
        var (topic, sub) = Names();
        var probe = new Probe
        {
            Behaviour = (context, _) => context.Event.Type == RejectedType
                ? throw new Messaging.Handling.UnprocessableEventException("rejected by the health case")
                : Task.CompletedTask,
        };
        await using var host = await StartWithHealthChecksAsync(probe, topic, sub);
        var good = NewEvent();
        await host.Publisher.PublishAsync(topic, good, Ct);
        await Wait.UntilAsync(() => probe.Handled.Any(h => h.Event.Id == good.Id), "the good event is handled");

        var healthy = await HealthUntilAsync(host, r => r.Status == HealthStatus.Healthy, "every messaging check is healthy while the host runs");
        Assert.Equal(
            [MessagingHealthChecksBuilderExtensions.BrokerCheckName, MessagingHealthChecksBuilderExtensions.ConsumersCheckName, MessagingHealthChecksBuilderExtensions.DeadLettersCheckName],
            healthy.Entries.Keys.Order(StringComparer.Ordinal));
        Assert.Contains(sub, healthy.Entries[MessagingHealthChecksBuilderExtensions.ConsumersCheckName].Description, StringComparison.Ordinal);

        var rejected = NewEvent(RejectedType);
        await host.Publisher.PublishAsync(topic, rejected, Ct);
        await Wait.UntilAsync(
            async () => await host.DeadLetters.PeekAsync(sub, 10, Ct), d => d.Any(x => x.Event?.Id == rejected.Id), "the rejected event is dead-lettered");
        var degraded = await HealthUntilAsync(host, r => StatusOf(r, MessagingHealthChecksBuilderExtensions.DeadLettersCheckName) == HealthStatus.Degraded,
            "the dead-letter check turns degraded");
        var deadLetters = degraded.Entries[MessagingHealthChecksBuilderExtensions.DeadLettersCheckName];
        Assert.True(deadLetters.Description?.Contains(sub, StringComparison.Ordinal) == true, $"the dead-letter check should name the subscription: {Describe(degraded)}");
        Assert.True(deadLetters.Description?.Contains("1 dead letter", StringComparison.Ordinal) == true, $"the dead-letter check should give the count: {Describe(degraded)}");
        Assert.True(StatusOf(degraded, MessagingHealthChecksBuilderExtensions.ConsumersCheckName) == HealthStatus.Healthy, $"a dead letter is no consumer fault: {Describe(degraded)}");
        Assert.True(StatusOf(degraded, MessagingHealthChecksBuilderExtensions.BrokerCheckName) == HealthStatus.Healthy, $"a dead letter is no broker fault: {Describe(degraded)}");
    });

    [Fact(Timeout = 180_000)]
    public Task Health_a_consumer_that_stops_while_the_host_runs_is_unhealthy() => Case(async () =>
    {
        var (topic, sub) = Names();
        await using var host = await StartWithHealthChecksAsync(new Probe(), topic, sub);
        await HealthUntilAsync(host, r => StatusOf(r, MessagingHealthChecksBuilderExtensions.ConsumersCheckName) == HealthStatus.Healthy, "the consumers check is healthy");

        // The transport goes away under the running host (as in a crash of its connections): its consumers are aborted.
        await host.CrashAsync();

        var report = await HealthUntilAsync(host, r => StatusOf(r, MessagingHealthChecksBuilderExtensions.ConsumersCheckName) == HealthStatus.Unhealthy,
            "the consumers check reports the stopped consumer");
        var consumers = report.Entries[MessagingHealthChecksBuilderExtensions.ConsumersCheckName].Description ?? "";
        Assert.True(consumers.Contains(sub, StringComparison.Ordinal) && consumers.Contains("stopped", StringComparison.Ordinal),
            $"the consumers check should name the stopped subscription: {Describe(report)}");
    });

    [Fact(Timeout = 240_000)]
    public Task Health_a_consumer_the_broker_breaks_is_reported_while_the_fault_lasts_and_healthy_after() => Case(async () =>
    {
        var (topic, sub) = Names();
        var probe = new Probe();
        await using var host = await StartWithHealthChecksAsync(probe, topic, sub);
        if (!host.Transport.Capabilities.ConnectsToBroker)
        {
            DeclaredUnsupported();
            return;
        }
        RequireFaultInjection();
        var before = NewEvent();
        await host.Publisher.PublishAsync(topic, before, Ct);
        await Wait.UntilAsync(() => probe.Handled.Any(h => h.Event.Id == before.Id), "consumption is under way");
        await HealthUntilAsync(host, r => StatusOf(r, MessagingHealthChecksBuilderExtensions.ConsumersCheckName) == HealthStatus.Healthy, "the consumers check is healthy");

        await using (await Fixture.BreakConsumersAsync(topic, sub, Ct))
        {
            if (Fixture.BrokenConsumersStayBroken)
            {
                // Receiving keeps failing: degraded at first, unhealthy once the failure outlasts the grace period.
                var report = await HealthUntilAsync(host, r => StatusOf(r, MessagingHealthChecksBuilderExtensions.ConsumersCheckName) == HealthStatus.Unhealthy,
                    "the consumers check reports the failing consumer as unhealthy after the grace period");
                var consumers = report.Entries[MessagingHealthChecksBuilderExtensions.ConsumersCheckName].Description ?? "";
                Assert.True(consumers.Contains(sub, StringComparison.Ordinal) && consumers.Contains("since", StringComparison.Ordinal),
                    $"the consumers check should name the subscription and since when it fails: {Describe(report)}");
            }
        }

        // The fault is over (at once, or now that it was lifted): the consumer receives again and the checks say so.
        // What is proven here is that the consumer receives again, not that one given event arrives: the Pub/Sub emulator may
        // hand an event to the stream the fault cut, count those deliveries and dead-letter it (a known limitation; loss is
        // covered by the delivery and fault cases). So a new event goes out every 15 s until one is handled.
        var sent = new List<string>();
        var recovered = DateTime.UtcNow.AddSeconds(120);
        while (!probe.Handled.Any(h => sent.Contains(h.Event.Id!)))
        {
            Assert.True(DateTime.UtcNow < recovered, $"No event published after the fault was handled within 120 s ({sent.Count} published).");
            var after = NewEvent();
            await PublishUntilAcceptedAsync(host, topic, after, TimeSpan.FromSeconds(60));
            sent.Add(after.Id!);
            var next = DateTime.UtcNow.AddSeconds(15);
            while (DateTime.UtcNow < next && !probe.Handled.Any(h => h.Event.Id == after.Id))
            {
                await Task.Delay(100, Ct);
            }
        }
        await HealthUntilAsync(host, r => StatusOf(r, MessagingHealthChecksBuilderExtensions.ConsumersCheckName) == HealthStatus.Healthy
                                          && StatusOf(r, MessagingHealthChecksBuilderExtensions.BrokerCheckName) == HealthStatus.Healthy,
            "the consumers and broker checks are healthy again after the fault", TimeSpan.FromSeconds(90));
    });
}
