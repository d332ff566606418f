using Messaging.Health;
using Messaging.Hosting;
using Messaging.Tests.Infrastructure;
using Messaging.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace Messaging.Tests.Health;

/// <summary>The consumers check's state machine: running, failing (degraded, then unhealthy after the grace period), recovered, stopped.</summary>
public sealed class ConsumersHealthCheckTests
{
    private static readonly TimeSpan Grace = TimeSpan.FromSeconds(30);
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.Zero));

    private static Task OnDelivery(ITransportDelivery delivery, CancellationToken cancellationToken) => Task.CompletedTask;

    private async Task<(PipelineHarness Harness, ConsumerRegistry Registry, ConsumersHealthCheck Check)> StartAsync()
    {
        var harness = await PipelineHarness.StartAsync(PipelineHarness.Subscription(concurrency: 1), OnDelivery, time: _time);
        var registry = new ConsumerRegistry();
        registry.Add(harness.Pipeline);
        registry.MarkStarted();
        var check = new ConsumersHealthCheck(registry, Options.Create(new MessagingHealthCheckOptions { ConsumerFailureGracePeriod = Grace }), _time);
        return (harness, registry, check);
    }

    private static Task<HealthCheckResult> CheckAsync(ConsumersHealthCheck check) => check.CheckHealthAsync(new HealthCheckContext(), Wait.TestToken);

    [Fact]
    public async Task A_running_consumer_is_healthy_and_named()
    {
        var (harness, _, check) = await StartAsync();
        await using var _1 = harness;

        var result = await CheckAsync(check);

        Assert.Equal(HealthStatus.Healthy, result.Status);
        Assert.Contains("orders.billing", result.Description, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Before_the_hosted_service_started_the_check_is_unhealthy()
    {
        var check = new ConsumersHealthCheck(new ConsumerRegistry(), Options.Create(new MessagingHealthCheckOptions()), _time);

        var result = await CheckAsync(check);

        Assert.Equal(HealthStatus.Unhealthy, result.Status);
        Assert.Contains("not started", result.Description, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_failing_receive_is_degraded_within_the_grace_period_then_unhealthy_with_reason_and_since_then_healthy_once_recovered()
    {
        var (harness, _, check) = await StartAsync();
        await using var _1 = harness;
        var failedAt = _time.GetUtcNow();

        harness.Pipeline.ReportReceiveFailing("broker said 503");
        var degraded = await CheckAsync(check);
        Assert.Equal(HealthStatus.Degraded, degraded.Status);
        Assert.Contains("orders.billing", degraded.Description, StringComparison.Ordinal);
        Assert.Contains("broker said 503", degraded.Description, StringComparison.Ordinal);

        _time.Advance(Grace - TimeSpan.FromSeconds(1));
        harness.Pipeline.ReportReceiveFailing("broker said 500"); // a later failure updates the reason, not the start
        Assert.Equal(HealthStatus.Degraded, (await CheckAsync(check)).Status);

        _time.Advance(TimeSpan.FromSeconds(1));
        var unhealthy = await CheckAsync(check);
        Assert.Equal(HealthStatus.Unhealthy, unhealthy.Status);
        Assert.Contains("broker said 500", unhealthy.Description, StringComparison.Ordinal);
        Assert.Contains(failedAt.ToString("O", System.Globalization.CultureInfo.InvariantCulture), unhealthy.Description, StringComparison.Ordinal);

        harness.Pipeline.ReportReceiveRecovered();
        Assert.Equal(HealthStatus.Healthy, (await CheckAsync(check)).Status);
    }

    [Fact]
    public async Task A_zero_grace_period_reports_a_failing_receive_unhealthy_at_once()
    {
        var health = (await StartAsync()).Harness;
        await using var _1 = health;
        health.Pipeline.ReportReceiveFailing("down");

        var result = ConsumersHealthCheck.Evaluate(ConsumerRegistry.HostState.Running, [health.Pipeline.GetHealth()], _time.GetUtcNow(), TimeSpan.Zero);

        Assert.Equal(HealthStatus.Unhealthy, result.Status);
    }

    [Fact]
    public async Task Each_source_recovers_on_its_own_and_the_consumer_is_healthy_only_when_all_have()
    {
        var (harness, _, check) = await StartAsync();
        await using var _1 = harness;

        harness.Pipeline.ReportReceiveFailing("link detached", "orders");
        _time.Advance(TimeSpan.FromSeconds(10));
        harness.Pipeline.ReportReceiveFailing("timeout", "orders.redelivery");
        _time.Advance(Grace - TimeSpan.FromSeconds(10));
        var both = await CheckAsync(check);
        Assert.Equal(HealthStatus.Unhealthy, both.Status); // since the first source failed
        Assert.Contains("orders: link detached", both.Description, StringComparison.Ordinal);
        Assert.Contains("orders.redelivery: timeout", both.Description, StringComparison.Ordinal);

        harness.Pipeline.ReportReceiveRecovered("orders");
        var one = await CheckAsync(check);
        Assert.Equal(HealthStatus.Degraded, one.Status); // the other failed more recently than the grace period
        Assert.DoesNotContain("link detached", one.Description, StringComparison.Ordinal);

        harness.Pipeline.ReportReceiveRecovered("orders.redelivery");
        Assert.Equal(HealthStatus.Healthy, (await CheckAsync(check)).Status);
    }

    [Fact]
    public async Task A_consumer_stopped_while_the_host_runs_is_unhealthy_and_a_host_stopping_is_degraded()
    {
        var (harness, registry, check) = await StartAsync();
        await using var _1 = harness;
        await harness.StopAsync();

        var stopped = await CheckAsync(check);
        Assert.Equal(HealthStatus.Unhealthy, stopped.Status);
        Assert.Contains("orders.billing", stopped.Description, StringComparison.Ordinal);
        Assert.Contains("stopped", stopped.Description, StringComparison.Ordinal);

        registry.MarkStopping();
        Assert.Equal(HealthStatus.Degraded, (await CheckAsync(check)).Status);
    }

    [Fact]
    public async Task An_aborted_consumer_is_unhealthy()
    {
        var (harness, _, check) = await StartAsync();
        await using var _1 = harness;
        await Wait.ForAsync(harness.Pipeline.AbortAsync(), "the abort");

        Assert.Equal(HealthStatus.Unhealthy, (await CheckAsync(check)).Status);
    }

    [Fact]
    public void A_consumer_not_started_yet_is_unhealthy()
    {
        var pipeline = new ReceivePipeline(PipelineHarness.Subscription(concurrency: 1), OnDelivery, logger: null, _time, "fake");

        var result = ConsumersHealthCheck.Evaluate(ConsumerRegistry.HostState.Running, [pipeline.GetHealth()], _time.GetUtcNow(), Grace);

        Assert.Equal(HealthStatus.Unhealthy, result.Status);
        Assert.Contains("has not started", result.Description, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_pull_loop_reports_failing_receives_and_their_recovery()
    {
        // Real time: the loop backs off with the pipeline's clock between failed receives.
        await using var harness = await PipelineHarness.StartAsync(PipelineHarness.Subscription(concurrency: 1), OnDelivery);
        var failing = true;
        var loop = new PullReceiveLoop<FakeMessage>(harness.Pipeline, "queue-1", maxPerReceive: 1,
            (_, _) => Volatile.Read(ref failing) ? throw new IOException("connection refused") : Task.FromResult<IReadOnlyList<FakeMessage>>([]),
            m => m);
        await using var _1 = loop;
        loop.Start();

        await Wait.UntilAsync(() => harness.Pipeline.GetHealth().ReceiveFailure is not null, "the failing receive is reported");
        Assert.Contains("queue-1: IOException: connection refused", harness.Pipeline.GetHealth().ReceiveFailure, StringComparison.Ordinal);

        Volatile.Write(ref failing, false);
        await Wait.UntilAsync(() => harness.Pipeline.GetHealth().ReceiveFailure is null, "the recovered receive is reported");
        await Wait.ForAsync(loop.StopAsync(Wait.TestToken), "the loop to stop");
    }
}

/// <summary>The options are validated at start-up, with messages naming the setting.</summary>
public sealed class MessagingHealthCheckOptionsTests
{
    [Theory]
    [InlineData("ConsumerFailureGracePeriod")]
    [InlineData("DeadLetterDegradedThreshold")]
    [InlineData("CheckTimeout")]
    public void An_invalid_setting_fails_with_its_name(string setting)
    {
        var services = new ServiceCollection();
        services.AddHealthChecks().AddMessagingHealthChecks(o =>
        {
            switch (setting)
            {
                case "ConsumerFailureGracePeriod": o.ConsumerFailureGracePeriod = TimeSpan.FromSeconds(-1); break;
                case "DeadLetterDegradedThreshold": o.DeadLetterDegradedThreshold = 0; break;
                default: o.CheckTimeout = TimeSpan.Zero; break;
            }
        });
        using var provider = services.BuildServiceProvider();

        var failure = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IOptions<MessagingHealthCheckOptions>>().Value);

        Assert.Contains($"Messaging:HealthChecks:{setting}", failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_defaults_are_valid_and_a_null_threshold_turns_the_dead_letter_check_off()
    {
        var services = new ServiceCollection();
        services.AddHealthChecks().AddMessagingHealthChecks(o => o.DeadLetterDegradedThreshold = null);
        using var provider = services.BuildServiceProvider();

        var options = provider.GetRequiredService<IOptions<MessagingHealthCheckOptions>>().Value;

        Assert.Null(options.DeadLetterDegradedThreshold);
        Assert.Equal(TimeSpan.FromSeconds(30), options.ConsumerFailureGracePeriod);
    }
}
