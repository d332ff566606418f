using Messaging.Hosting;
using Messaging.Policy;
using Messaging.RabbitMQ;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Messaging.ConformanceTests.Contract;

/// <summary>Configuration is validated at start-up with errors that name the setting; configuration overrides code.</summary>
public sealed class ConfigurationTests
{
    private static IHost Build(Dictionary<string, string?> settings, Action<MessagingBuilder>? configure = null)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(settings);
        var messaging = builder.Services.AddMessaging(builder.Configuration).AddRabbitMq();
        (configure ?? (m => m.AddSubscription("payments", "orders", s => s.HandleCloudEvents<Infrastructure.ProbeHandler>().WithMaxAttempts(7))))(messaging);
        builder.Services.AddSingleton(new Infrastructure.Probe());
        builder.Services.AddSingleton(new Infrastructure.HostIdentity("config"));
        return builder.Build();
    }

    private static async Task<string> StartupErrorAsync(Dictionary<string, string?> settings)
    {
        using var host = Build(settings);
        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync(TestContext.Current.CancellationToken));
        return error.Message;
    }

    [Fact]
    public async Task Unknown_transport_fails_at_startup_naming_the_setting_and_the_choices()
    {
        var message = await StartupErrorAsync(new() { ["Messaging:Transport"] = "Kafka" });
        Assert.Contains("Messaging:Transport", message, StringComparison.Ordinal);
        Assert.Contains("Kafka", message, StringComparison.Ordinal);
        Assert.Contains("RabbitMQ", message, StringComparison.Ordinal);
        Assert.Contains("InMemory", message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("MaxAttempts", "0", "Messaging:Subscriptions:payments:MaxAttempts")]
    [InlineData("Concurrency", "0", "Messaging:Subscriptions:payments:Concurrency")]
    [InlineData("Prefetch", "0", "Messaging:Subscriptions:payments:Prefetch")]
    [InlineData("BackoffDelay", "-00:00:01", "Messaging:Subscriptions:payments:BackoffDelay")]
    [InlineData("BackoffMultiplier", "0.5", "Messaging:Subscriptions:payments:BackoffMultiplier")]
    public async Task Invalid_subscription_policy_fails_at_startup_naming_the_setting(string key, string value, string expected)
    {
        var message = await StartupErrorAsync(new() { [$"Messaging:Subscriptions:payments:{key}"] = value });
        Assert.Contains(expected, message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_subscription_configured_but_never_declared_is_reported()
    {
        var message = await StartupErrorAsync(new() { ["Messaging:Subscriptions:paymnets:MaxAttempts"] = "3" });
        Assert.Contains("Messaging:Subscriptions:paymnets", message, StringComparison.Ordinal);
        Assert.Contains("payments", message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("Uri", "http://example.com", "Messaging:RabbitMQ:Uri")]
    [InlineData("Port", "70000", "Messaging:RabbitMQ:Port")]
    [InlineData("PublisherChannels", "0", "Messaging:RabbitMQ:PublisherChannels")]
    [InlineData("ExchangeType", "7", "Messaging:RabbitMQ:ExchangeType")]
    public async Task Invalid_rabbitmq_settings_fail_at_startup_when_rabbitmq_is_selected(string key, string value, string expected)
    {
        var message = await StartupErrorAsync(new() { ["Messaging:Transport"] = "RabbitMQ", [$"Messaging:RabbitMQ:{key}"] = value });
        Assert.Contains(expected, message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_plaintext_amqp_uri_with_UseTls_is_refused_at_startup_and_the_password_is_not_shown()
    {
        var message = await StartupErrorAsync(new()
        {
            ["Messaging:Transport"] = "RabbitMQ",
            ["Messaging:RabbitMQ:Uri"] = "amqp://app:s3cret-pw@broker.example.com:5672/prod",
            ["Messaging:RabbitMQ:UseTls"] = "true",
        });
        Assert.Contains("Messaging:RabbitMQ:UseTls", message, StringComparison.Ordinal);
        Assert.Contains("amqps://", message, StringComparison.Ordinal);
        Assert.Contains("broker.example.com", message, StringComparison.Ordinal);
        Assert.DoesNotContain("s3cret-pw", message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_transport_built_without_the_host_refuses_a_plaintext_uri_with_UseTls_too()
    {
        var error = Assert.Throws<ArgumentException>(() => new Messaging.RabbitMQ.RabbitMqTransport(
            new Messaging.RabbitMQ.RabbitMqTransportOptions { Uri = "amqp://app:s3cret-pw@127.0.0.1:5672/", UseTls = true }, [],
            Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance));
        Assert.Contains("UseTls", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("s3cret-pw", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Invalid_rabbitmq_settings_are_ignored_when_another_transport_is_selected()
    {
        using var host = Build(new() { ["Messaging:RabbitMQ:Port"] = "70000" });
        await host.StartAsync(TestContext.Current.CancellationToken);
        await host.StopAsync(TestContext.Current.CancellationToken);
    }

    [Fact]
    public void Configuration_overrides_the_policy_set_in_code()
    {
        using var host = Build(new()
        {
            ["Messaging:Subscriptions:payments:Backoff"] = "Fixed",
            ["Messaging:Subscriptions:payments:BackoffDelay"] = "00:00:02",
            ["Messaging:Subscriptions:payments:Concurrency"] = "3",
        });
        var options = host.Services.GetRequiredService<IOptions<MessagingOptions>>().Value.Subscriptions["payments"];
        Assert.Equal(7, options.MaxAttempts); // from code
        Assert.Equal(BackoffKind.Fixed, options.Backoff); // from configuration
        Assert.Equal(TimeSpan.FromSeconds(2), options.BackoffDelay);
        Assert.Equal(3, options.Concurrency);
        Assert.Equal("orders", options.Topic);
    }

    [Fact]
    public void Invalid_entity_names_are_refused_when_declared()
    {
        var services = new ServiceCollection();
        var messaging = services.AddMessaging();
        var error = Assert.Throws<ArgumentException>(() => messaging.AddTopic("a/b"));
        Assert.Contains("'/' is not allowed", error.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => messaging.AddTopic("ab"));
    }

    [Fact]
    public void Backoff_schedules_are_deterministic_and_capped()
    {
        var exponential = Backoff.Exponential(TimeSpan.FromMilliseconds(100), TimeSpan.FromMilliseconds(500));
        Assert.Equal([100, 200, 400, 500, 500], Enumerable.Range(1, 5).Select(a => exponential.DelayAfter(a).TotalMilliseconds));
        Assert.Equal(TimeSpan.FromSeconds(3), Backoff.Fixed(TimeSpan.FromSeconds(3)).DelayAfter(9));
        Assert.Equal(TimeSpan.Zero, Backoff.Immediate.DelayAfter(1));
        var policy = new RetryPolicy(5, exponential);
        Assert.Equal([100, 200, 400, 500], policy.DistinctDelays().Select(d => d.TotalMilliseconds));
    }
}
