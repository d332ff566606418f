using Messaging.DeadLetters;
using Messaging.Hosting;
using Messaging.Publishing;
using Messaging.Transport;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Messaging.ConformanceTests.Infrastructure;

/// <summary>A real generic host running the library on the fixture's transport: what a user's service looks like.</summary>
public sealed class ConformanceHost : IAsyncDisposable
{
    private readonly IHost _host;
    private bool _stopped;

    private ConformanceHost(IHost host) => _host = host;

    public IEventPublisher Publisher => _host.Services.GetRequiredService<IEventPublisher>();

    public IDeadLetterStore DeadLetters => _host.Services.GetRequiredService<IDeadLetterStore>();

    public IMessageTransport Transport => _host.Services.GetRequiredService<IMessageTransport>();

    public IServiceProvider Services => _host.Services;

    public static IHost Build(ITransportFixture fixture, Probe probe, Action<MessagingBuilder> configure, Action<IServiceCollection>? services = null,
        IDictionary<string, string?>? settings = null)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(settings ?? new Dictionary<string, string?>());
        builder.Logging.AddFilter(level => level >= LogLevel.Warning);
        builder.Services.AddSingleton(probe);
        builder.Services.AddSingleton(new HostIdentity(Guid.NewGuid().ToString("N")));
        services?.Invoke(builder.Services);
        var messaging = builder.Services.AddMessaging(builder.Configuration);
        fixture.Configure(builder.Services, messaging);
        configure(messaging);
        return builder.Build();
    }

    public static async Task<ConformanceHost> StartAsync(ITransportFixture fixture, Probe probe, Action<MessagingBuilder> configure,
        Action<IServiceCollection>? services = null, IDictionary<string, string?>? settings = null)
    {
        var host = Build(fixture, probe, configure, services, settings);
        await host.StartAsync(TestContext.Current.CancellationToken);
        return new ConformanceHost(host);
    }

    /// <summary>Graceful stop: in-flight handlers finish within <paramref name="timeout"/>.</summary>
    public async Task StopAsync(TimeSpan? timeout = null)
    {
        if (_stopped)
        {
            return;
        }
        _stopped = true;
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(30));
        await _host.StopAsync(cts.Token);
    }

    /// <summary>Simulates a crash: the transport drops its connections without settling anything in flight.</summary>
    public async Task CrashAsync()
    {
        _stopped = true;
        await Transport.DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (!_stopped)
        {
            await StopAsync();
        }
        if (_host is IAsyncDisposable disposable)
        {
            await disposable.DisposeAsync();
        }
        else
        {
            _host.Dispose();
        }
    }
}
