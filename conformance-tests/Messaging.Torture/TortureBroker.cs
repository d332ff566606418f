using System.Diagnostics;
using System.Net;
using Messaging.LocalAws;
using Messaging.LocalServiceBus;
using Messaging.Testing;

namespace Messaging.Torture;

/// <summary>
/// One broker under torture: the settings the publisher and the consumers use, and the broker-side fault: a restart of
/// RabbitMQ or of the local SNS/SQS and Service Bus endpoints (their state kept, as a real broker keeps it), or, for the
/// Pub/Sub emulator (which loses everything on restart), a reset of every consumer stream.
/// </summary>
internal abstract class TortureBroker : IAsyncDisposable
{
    public abstract string Transport { get; }

    public abstract string FaultName { get; }

    /// <summary>Configuration of the publishing host (the driver).</summary>
    public abstract Dictionary<string, string?> PublisherSettings(string topic);

    /// <summary>Configuration of the consumer processes (may point elsewhere than the publisher, through a relay).</summary>
    public virtual Dictionary<string, string?> ConsumerSettings(string topic) => PublisherSettings(topic);

    public abstract Task FaultAsync(CancellationToken cancellationToken);

    public virtual Task CleanUpAsync(string topic) => Task.CompletedTask;

    public virtual ValueTask DisposeAsync() => ValueTask.CompletedTask;

    public static async Task<TortureBroker> StartAsync(string transport, CancellationToken cancellationToken) => transport switch
    {
        "RabbitMQ" => new RabbitMqBroker(),
        "PubSub" => new PubSubBroker(),
        "SnsSqs" => new SnsSqsBroker(await LocalAwsEndpoint.StartAsync(cancellationToken: cancellationToken)),
        "ServiceBus" => new ServiceBusBroker(await LocalServiceBusEndpoint.StartAsync(cancellationToken: cancellationToken)),
        _ => throw new ArgumentException($"Unknown transport '{transport}': RabbitMQ, PubSub, SnsSqs or ServiceBus."),
    };

    private static Dictionary<string, string?> Common(string transport, string topic) => new()
    {
        ["Messaging:Transport"] = transport,
        ["Messaging:Source"] = "urn:messaging:torture",
        ["Torture:Topic"] = topic,
    };

    private sealed class RabbitMqBroker : TortureBroker
    {
        private readonly string _uri = Environment.GetEnvironmentVariable("MESSAGING_RABBITMQ_URI") ?? "amqp://guest:guest@127.0.0.1:5672/";
        private readonly string _ctl = Environment.GetEnvironmentVariable("MESSAGING_RABBITMQ_CTL")
            ?? new[] { "/usr/sbin/rabbitmqctl", "/usr/lib/rabbitmq/bin/rabbitmqctl", "/usr/local/sbin/rabbitmqctl" }.FirstOrDefault(File.Exists)
            ?? "rabbitmqctl";

        public override string Transport => "RabbitMQ";

        public override string FaultName => "broker restart (stop_app, start_app)";

        public override Dictionary<string, string?> PublisherSettings(string topic)
        {
            var settings = Common(Transport, topic);
            settings["Messaging:RabbitMQ:Uri"] = _uri;
            settings["Messaging:RabbitMQ:PublishTimeout"] = "00:01:00";
            return settings;
        }

        public override async Task FaultAsync(CancellationToken cancellationToken)
        {
            await CtlAsync(cancellationToken, "stop_app");
            await CtlAsync(cancellationToken, "start_app");
            await CtlAsync(cancellationToken, "await_startup");
        }

        public override async Task CleanUpAsync(string topic)
        {
            foreach (var queue in new[] { topic + "-sub", topic + "-sub.dead-letter" })
            {
                try
                {
                    await CtlAsync(CancellationToken.None, "delete_queue", queue);
                }
                catch (InvalidOperationException)
                {
                    // Best effort.
                }
            }
        }

        private async Task CtlAsync(CancellationToken cancellationToken, params string[] arguments)
        {
            var start = new ProcessStartInfo(_ctl) { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var argument in arguments)
            {
                start.ArgumentList.Add(argument);
            }
            using var process = Process.Start(start)!;
            var error = process.StandardError.ReadToEndAsync(cancellationToken);
            await process.StandardOutput.ReadToEndAsync(cancellationToken);
            await process.WaitForExitAsync(cancellationToken);
            if (process.ExitCode != 0)
            {
                throw new InvalidOperationException($"{_ctl} {string.Join(' ', arguments)} failed: {await error}");
            }
        }
    }

    private sealed class PubSubBroker : TortureBroker
    {
        private readonly string _emulator = Environment.GetEnvironmentVariable("PUBSUB_EMULATOR_HOST") ?? "127.0.0.1:8085";
        private readonly TcpProxy _relay;

        public PubSubBroker()
        {
            _relay = new TcpProxy(IPEndPoint.Parse(_emulator));
        }

        public override string Transport => "PubSub";

        public override string FaultName => "every consumer stream reset (the emulator loses its state on restart)";

        public override Dictionary<string, string?> PublisherSettings(string topic)
        {
            var settings = Common(Transport, topic);
            settings["Messaging:PubSub:ProjectId"] = "torture-project";
            settings["Messaging:PubSub:EmulatorHost"] = _emulator;
            // The shortest lease Pub/Sub allows: what a killed consumer held comes back after 10 s, not 60.
            settings["Messaging:PubSub:AckDeadline"] = "00:00:10";
            return settings;
        }

        public override Dictionary<string, string?> ConsumerSettings(string topic)
        {
            var settings = PublisherSettings(topic);
            settings["Messaging:PubSub:EmulatorHost"] = $"127.0.0.1:{_relay.Port}";
            return settings;
        }

        public override Task FaultAsync(CancellationToken cancellationToken)
        {
            _relay.ResetAll();
            return Task.CompletedTask;
        }

        public override ValueTask DisposeAsync() => _relay.DisposeAsync();
    }

    private sealed class SnsSqsBroker(LocalAwsEndpoint endpoint) : TortureBroker
    {
        public override string Transport => "SnsSqs";

        public override string FaultName => "local endpoint restart (listener stopped 2 s, state kept)";

        public override Dictionary<string, string?> PublisherSettings(string topic)
        {
            var settings = Common(Transport, topic);
            settings["Messaging:SnsSqs:ServiceUrl"] = endpoint.ServiceUrl.ToString();
            settings["Messaging:SnsSqs:Region"] = endpoint.Region;
            settings["Messaging:SnsSqs:AccessKeyId"] = "local";
            settings["Messaging:SnsSqs:SecretAccessKey"] = "local";
            // Short, so that what a killed consumer held comes back quickly.
            settings["Messaging:SnsSqs:VisibilityTimeout"] = "00:00:05";
            return settings;
        }

        public override async Task FaultAsync(CancellationToken cancellationToken)
        {
            await endpoint.StopListeningAsync(cancellationToken);
            await Task.Delay(TimeSpan.FromSeconds(2), cancellationToken);
            await endpoint.StartListeningAsync(cancellationToken);
        }

        public override ValueTask DisposeAsync() => endpoint.DisposeAsync();
    }

    private sealed class ServiceBusBroker(LocalServiceBusEndpoint endpoint) : TortureBroker
    {
        public override string Transport => "ServiceBus";

        public override string FaultName => "local endpoint restart (listener stopped 2 s, state kept)";

        public override Dictionary<string, string?> PublisherSettings(string topic)
        {
            var settings = Common(Transport, topic);
            settings["Messaging:ServiceBus:ConnectionString"] = endpoint.ConnectionString;
            settings["Messaging:ServiceBus:AdministrationConnectionString"] = endpoint.AdministrationConnectionString;
            // Short locks: what a killed consumer held comes back quickly.
            settings["Messaging:ServiceBus:LockDuration"] = "00:00:10";
            settings["Messaging:ServiceBus:ReceiveWaitTime"] = "00:00:05";
            return settings;
        }

        public override async Task FaultAsync(CancellationToken cancellationToken)
        {
            await endpoint.StopListeningAsync(cancellationToken);
            await Task.Delay(TimeSpan.FromSeconds(2), cancellationToken);
            await endpoint.StartListeningAsync(cancellationToken);
        }

        public override ValueTask DisposeAsync() => endpoint.DisposeAsync();
    }
}
