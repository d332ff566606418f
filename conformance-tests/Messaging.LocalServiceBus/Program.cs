using System.Globalization;
using System.Runtime.InteropServices;
using Messaging.LocalServiceBus;

var options = new LocalServiceBusOptions { AmqpPort = 5672, ManagementPort = 5300, Log = line => Console.Error.WriteLine(line) };
for (int i = 0; i < args.Length; i++)
{
    string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
    switch (args[i])
    {
        case "--port":
            options.AmqpPort = int.Parse(Value(), CultureInfo.InvariantCulture);
            break;
        case "--management-port":
            options.ManagementPort = int.Parse(Value(), CultureInfo.InvariantCulture);
            break;
        case "--config":
            options.ConfigFilePath = Value();
            break;
        default:
            Console.Error.WriteLine($"Unknown argument '{args[i]}'. Usage: Messaging.LocalServiceBus [--port 5672] [--management-port 5300] [--config Config.json]");
            return 2;
    }
}

using var shutdown = new CancellationTokenSource();

// Ctrl+C and SIGTERM (docker stop, CI teardown) both end the process through an orderly endpoint disposal.
void Stop(PosixSignalContext context)
{
    context.Cancel = true;
    shutdown.Cancel();
}

using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);

await using var endpoint = await LocalServiceBusEndpoint.StartAsync(options, shutdown.Token);
Console.WriteLine($"ConnectionString={endpoint.ConnectionString}");
Console.WriteLine($"AdministrationConnectionString={endpoint.AdministrationConnectionString}");
try
{
    await Task.Delay(Timeout.Infinite, shutdown.Token);
}
catch (OperationCanceledException)
{
}

return 0;
