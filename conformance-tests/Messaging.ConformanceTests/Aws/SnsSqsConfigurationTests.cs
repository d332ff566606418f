using Messaging.Aws;
using Messaging.ConformanceTests.Infrastructure;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Messaging.ConformanceTests.Aws;

/// <summary><c>AddSnsSqs()</c> binds <c>Messaging:SnsSqs</c> and validates it at start-up, only when the transport is selected.</summary>
public sealed class SnsSqsConfigurationTests
{
    private static IHost Build(Dictionary<string, string?> settings)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(settings);
        builder.Services.AddMessaging(builder.Configuration).AddSnsSqs()
            .AddSubscription("payments", "orders", s => s.HandleCloudEvents<ProbeHandler>());
        builder.Services.AddSingleton(new Probe());
        builder.Services.AddSingleton(new HostIdentity("config"));
        return builder.Build();
    }

    [Fact]
    public void Settings_bind_from_the_SnsSqs_section()
    {
        using var host = Build(new()
        {
            ["Messaging:SnsSqs:ServiceUrl"] = "http://127.0.0.1:4566",
            ["Messaging:SnsSqs:Region"] = "eu-west-1",
            ["Messaging:SnsSqs:VisibilityTimeout"] = "00:00:07",
            ["Messaging:SnsSqs:WaitTimeSeconds"] = "5",
        });
        var options = host.Services.GetRequiredService<IOptions<SnsSqsTransportOptions>>().Value;
        Assert.Equal(("http://127.0.0.1:4566", "eu-west-1", TimeSpan.FromSeconds(7), 5),
            (options.ServiceUrl, options.Region, options.VisibilityTimeout, options.WaitTimeSeconds));
    }

    [Fact]
    public async Task Invalid_settings_fail_at_startup_naming_the_setting_when_the_transport_is_selected()
    {
        using var host = Build(new()
        {
            ["Messaging:Transport"] = SnsSqsTransport.TransportName,
            ["Messaging:SnsSqs:WaitTimeSeconds"] = "30",
            ["Messaging:SnsSqs:ServiceUrl"] = "127.0.0.1:4566",
        });
        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync(TestContext.Current.CancellationToken));
        Assert.Contains("Messaging:SnsSqs:WaitTimeSeconds must be between 0 and 20", error.Message, StringComparison.Ordinal);
        Assert.Contains("Messaging:SnsSqs:ServiceUrl '127.0.0.1:4566'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Settings_of_a_transport_that_is_not_selected_are_not_checked()
    {
        using var host = Build(new() { ["Messaging:SnsSqs:WaitTimeSeconds"] = "30" });
        await host.StartAsync(TestContext.Current.CancellationToken);
        await host.StopAsync(TestContext.Current.CancellationToken);
    }
}
