using Amazon.SQS.Model;
using Azure.Messaging.ServiceBus;
using Grpc.Core;
using Messaging.Publishing;
using RabbitMQ.Client.Exceptions;
using Spectre.Console;

namespace Messaging.Cli;

/// <summary>What every command runs in: the console, the configuration overrides, and the mapping of failures to exit codes.</summary>
internal sealed class CliContext(IAnsiConsole console, IReadOnlyDictionary<string, string?> overrides)
{
    public IAnsiConsole Console { get; } = console;

    /// <summary>Opens a session on the configured transport, runs <paramref name="command"/> and turns its failures into <see cref="CliException"/>s.</summary>
    public async Task<int> RunAsync(string? settingsFile, Func<CliSession, CancellationToken, Task<int>> command, CancellationToken cancellationToken, string? subscription = null)
    {
        var configuration = CliConfiguration.Build(settingsFile, overrides);
        var session = CliSession.Open(configuration);
        await using (session.ConfigureAwait(false))
        {
            try
            {
                return await command(session, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not (CliException or OperationCanceledException) || !cancellationToken.IsCancellationRequested && ex is OperationCanceledException)
            {
                var transport = session.Options.Transport;
                var message = CliConfiguration.OneLine(Innermost(ex).Message);
                if (IsNotFound(ex))
                {
                    throw new CliException(ExitCodes.NotFound, subscription is null ? $"not found on {transport}: {message}" : $"subscription {subscription} not found on {transport}: {message}", ex);
                }
                if (ex is EventPublishException publish)
                {
                    throw new CliException(ExitCodes.BrokerFailure, $"{transport} did not accept the event{(publish.IsTransient ? " (transient; try again)" : "")}: {CliConfiguration.OneLine(publish.Message)}", ex);
                }
                throw new CliException(ExitCodes.BrokerFailure, $"{transport} failed: {ex.GetType().Name}: {message}", ex);
            }
        }
    }

    /// <summary>True when the broker says the subscription (its queue, subscription or dead-letter destination) does not exist.</summary>
    internal static bool IsNotFound(Exception exception)
    {
        for (var ex = exception; ex is not null; ex = ex.InnerException)
        {
            switch (ex)
            {
                case QueueDoesNotExistException:
                case RpcException { StatusCode: StatusCode.NotFound }:
                case ServiceBusException { Reason: ServiceBusFailureReason.MessagingEntityNotFound }:
                case Azure.RequestFailedException { Status: 404 }:
                case OperationInterruptedException { ShutdownReason.ReplyCode: 404 }:
                    return true;
                case InvalidOperationException when ex.Message.Contains("does not exist", StringComparison.OrdinalIgnoreCase)
                                                    || ex.Message.Contains("has a subscription named", StringComparison.Ordinal):
                    return true;
            }
        }
        return false;
    }

    private static Exception Innermost(Exception exception)
    {
        // The library's own messages name the entity; a broker client's inner exception often says less.
        return exception is InvalidOperationException || exception.InnerException is null ? exception : exception.InnerException;
    }
}
