using Messaging.Handling;
using Messaging.Hosting;
using Messaging.Aws;
using Messaging.PubSub;
using Messaging.RabbitMQ;
using Messaging.ServiceBus;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Messaging.Torture;

/// <summary>
/// The consumer the driver kills with SIGKILL: a plain service on the library that records the id of every event its
/// handler finished, one line per event, flushed to the kernel before the handler returns (so before the broker is told),
/// which a SIGKILL cannot undo.
/// </summary>
internal static class ConsumerProcess
{
    public static async Task<int> RunAsync(string[] args)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddCommandLine(args);
        // Logs go to standard error (the driver shows them); standard output only says "ready".
        builder.Logging.AddSimpleConsole(o => o.SingleLine = true).AddFilter(level => level >= LogLevel.Warning);
        builder.Services.Configure<Microsoft.Extensions.Logging.Console.ConsoleLoggerOptions>(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        var output = builder.Configuration["Torture:Output"] ?? throw new ArgumentException("--Torture:Output is required.");
        var topic = builder.Configuration["Torture:Topic"] ?? throw new ArgumentException("--Torture:Topic is required.");
        builder.Services.AddSingleton(new HandledLog(output));
        builder.Services.AddMessaging(builder.Configuration)
            .AddRabbitMq()
            .AddPubSub()
            .AddSnsSqs()
            .AddServiceBus()
            .AddSubscription(topic + "-sub", topic, s => s.HandleCloudEvents<RecordingHandler>());
        using var host = builder.Build();
        await host.StartAsync();
        await Console.Out.WriteLineAsync("ready");
        await Console.Out.FlushAsync();
        await host.WaitForShutdownAsync();
        return 0;
    }

    private sealed class HandledLog(string path)
    {
        private readonly StreamWriter _writer = new(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite)) { AutoFlush = true };
        private readonly Lock _lock = new();

        public void Record(string id)
        {
            lock (_lock)
            {
                _writer.WriteLine(id);
            }
        }
    }

    private sealed class RecordingHandler(HandledLog log) : ICloudEventHandler
    {
        public Task HandleAsync(EventContext context, CancellationToken cancellationToken)
        {
            log.Record(context.Event.Id!);
            return Task.CompletedTask;
        }
    }
}
