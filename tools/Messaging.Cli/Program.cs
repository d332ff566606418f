using Messaging.Cli;
using Spectre.Console;

using var cancellation = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    cancellation.Cancel();
};
return await MessagingCli.RunAsync(args, AnsiConsole.Console, cancellation.Token);
