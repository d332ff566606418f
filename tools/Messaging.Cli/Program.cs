using Messaging.Cli;
using Spectre.Console;

using var cancellation = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    cancellation.Cancel();
};
var console = AnsiConsole.Console;
if (Console.IsOutputRedirected)
{
    // Piped into a script or a file: no terminal width to fit, so tables keep ids on one line.
    console.Profile.Width = 200;
}
return await MessagingCli.RunAsync(args, console, cancellation.Token);
