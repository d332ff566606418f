using CloudNative.CloudEvents;
using Azure.Core;
using Messaging.Hosting;
using Messaging.ServiceBus;
using Messaging.Transport;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Messaging.ConformanceTests.ServiceBus;

/// <summary>How a service selects and configures the Service Bus transport: configuration binding, start-up validation, credentials.</summary>
public sealed class ServiceBusConfigurationTests
{
    private static IHost Build(Dictionary<string, string?> settings, Action<IServiceCollection>? services = null)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(settings);
        builder.Services.AddMessaging(builder.Configuration).AddServiceBus().AddTopic("orders");
        services?.Invoke(builder.Services);
        return builder.Build();
    }

    [Fact]
    public void Settings_bind_from_the_Messaging_ServiceBus_section()
    {
        using var host = Build(new()
        {
            ["Messaging:Transport"] = "ServiceBus",
            ["Messaging:ServiceBus:ConnectionString"] = "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
            ["Messaging:ServiceBus:AdministrationConnectionString"] = "Endpoint=sb://127.0.0.1:5300;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
            ["Messaging:ServiceBus:MaxEventSizeBytes"] = "1048576",
            ["Messaging:ServiceBus:ContentMode"] = "Structured",
            ["Messaging:ServiceBus:LockDuration"] = "00:00:30",
        });
        var options = host.Services.GetRequiredService<IOptions<ServiceBusTransportOptions>>().Value;
        Assert.Equal(1_048_576, options.MaxEventSizeBytes);
        Assert.Equal(ContentMode.Structured, options.ContentMode);
        Assert.Equal(TimeSpan.FromSeconds(30), options.LockDuration);
        var transport = Assert.IsType<ServiceBusTransport>(host.Services.GetRequiredService<IMessageTransport>());
        Assert.Equal(1_048_576, transport.Capabilities.MaxEventSizeBytes);
        Assert.True(transport.Capabilities.OrderingKeys); // through sessions
        Assert.Equal("127.0.0.1", transport.Endpoint);
    }

    [Fact]
    public async Task Invalid_settings_fail_at_start_up_naming_the_setting()
    {
        using var host = Build(new()
        {
            ["Messaging:Transport"] = "ServiceBus",
            ["Messaging:ServiceBus:ConnectionString"] = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=app;SharedAccessKey=secret",
            ["Messaging:ServiceBus:MaxDeliveryCount"] = "0",
        });
        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync(TestContext.Current.CancellationToken));
        Assert.Contains("Messaging:ServiceBus:MaxDeliveryCount must be at least 1 (was 0)", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("secret", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_namespace_uses_the_TokenCredential_from_dependency_injection_or_says_how_to_provide_one()
    {
        var settings = new Dictionary<string, string?>
        {
            ["Messaging:Transport"] = "ServiceBus",
            ["Messaging:ServiceBus:FullyQualifiedNamespace"] = "my-ns.servicebus.windows.net",
        };
        using (var withCredential = Build(settings, s => s.AddSingleton<TokenCredential>(new StaticTokenCredential())))
        {
            var transport = Assert.IsType<ServiceBusTransport>(withCredential.Services.GetRequiredService<IMessageTransport>());
            Assert.Equal("my-ns.servicebus.windows.net", transport.Endpoint);
        }
        using var without = Build(settings);
        var error = Assert.Throws<InvalidOperationException>(() => without.Services.GetRequiredService<IMessageTransport>());
        Assert.Contains("TokenCredential", error.Message, StringComparison.Ordinal);
        Assert.Contains("Messaging:ServiceBus:FullyQualifiedNamespace", error.Message, StringComparison.Ordinal);
    }

    /// <summary>A credential that is never asked for a token: creating clients does not connect.</summary>
    private sealed class StaticTokenCredential : TokenCredential
    {
        public override AccessToken GetToken(TokenRequestContext requestContext, CancellationToken cancellationToken) =>
            new("not-a-real-token", DateTimeOffset.UtcNow.AddHours(1));

        public override ValueTask<AccessToken> GetTokenAsync(TokenRequestContext requestContext, CancellationToken cancellationToken) =>
            ValueTask.FromResult(GetToken(requestContext, cancellationToken));
    }
}
