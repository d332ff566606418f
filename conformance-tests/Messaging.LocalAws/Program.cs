using System.Globalization;
using System.Runtime.InteropServices;

namespace Messaging.LocalAws;

/// <summary>Runs the endpoint standalone: <c>dotnet Messaging.LocalAws.dll [--port 4566] [--region us-east-1] [--account-id 000000000000]</c>.</summary>
internal static class Program
{
    public static async Task<int> Main(string[] args)
    {
        var options = new LocalAwsEndpointOptions();
        for (var index = 0; index < args.Length; index++)
        {
            var value = index + 1 < args.Length ? args[index + 1] : null;
            switch (args[index])
            {
                case "--port" when int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var port):
                    options.Port = port;
                    index++;
                    break;
                case "--region" when value is not null:
                    options.Region = value;
                    index++;
                    break;
                case "--account-id" when value is not null:
                    options.AccountId = value;
                    index++;
                    break;
                default:
                    await Console.Error.WriteLineAsync(
                        $"Unknown or incomplete argument '{args[index]}'. Usage: Messaging.LocalAws [--port N] [--region NAME] [--account-id 12DIGITS]").ConfigureAwait(false);
                    return 2;
            }
        }

        using var stop = new CancellationTokenSource();
        Console.CancelKeyPress += (_, eventArgs) =>
        {
            eventArgs.Cancel = true;
            stop.Cancel();
        };
        // A CI script or process manager stops it with SIGTERM; shut down the listener the same way as for Ctrl+C.
        using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
        {
            context.Cancel = true;
            stop.Cancel();
        });

        await using var endpoint = await LocalAwsEndpoint.StartAsync(options, stop.Token).ConfigureAwait(false);
        Console.WriteLine($"SNS/SQS endpoint listening on {endpoint.ServiceUrl} (region {endpoint.Region}, account {endpoint.AccountId}). Ctrl+C stops it.");
        try
        {
            await Task.Delay(Timeout.Infinite, stop.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Ctrl+C.
        }

        return 0;
    }
}
