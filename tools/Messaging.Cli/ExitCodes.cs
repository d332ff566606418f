namespace Messaging.Cli;

/// <summary>The exit codes of the <c>messaging</c> tool, as <c>--help</c> and the README document them.</summary>
internal static class ExitCodes
{
    /// <summary>The command did what it was asked.</summary>
    public const int Success = 0;

    /// <summary>The broker refused or failed the operation, or could not be reached.</summary>
    public const int BrokerFailure = 1;

    /// <summary>The command line, the configuration or an input file is wrong; nothing was changed.</summary>
    public const int UsageError = 2;

    /// <summary>What the command names does not exist: the subscription, or no dead letter matches the selection.</summary>
    public const int NotFound = 3;

    /// <summary>The command was cancelled (Ctrl+C).</summary>
    public const int Cancelled = 130;

    public const string Help =
        "Exit codes: 0 success; 1 the broker failed the operation or cannot be reached; 2 usage, configuration or input-file error " +
        "(nothing changed); 3 not found (unknown subscription, or no dead letter matches); 130 cancelled.";
}

/// <summary>An error the tool reports on one line of stderr, with its exit code.</summary>
internal sealed class CliException(int exitCode, string message, Exception? inner = null) : Exception(message, inner)
{
    public int ExitCode { get; } = exitCode;
}
