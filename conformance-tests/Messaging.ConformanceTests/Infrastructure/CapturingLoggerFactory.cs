using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Messaging.ConformanceTests.Infrastructure;

/// <summary>Keeps every Warning-or-above log line, for cases that assert a fault was named. A factory, or a provider added to a host.</summary>
public sealed class CapturingLoggerFactory : ILoggerFactory, ILoggerProvider
{
    private readonly ConcurrentQueue<string> _warnings = new();
    private readonly ConcurrentQueue<string> _errors = new();

    public IReadOnlyCollection<string> Warnings => _warnings;

    /// <summary>Error-or-above lines, each followed by the messages of its exception chain (the pipeline logs the reason there).</summary>
    public IReadOnlyCollection<string> Errors => _errors;

    public ILogger CreateLogger(string categoryName) => new Logger(_warnings, _errors);

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }

    private sealed class Logger(ConcurrentQueue<string> warnings, ConcurrentQueue<string> errors) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel >= LogLevel.Warning)
            {
                warnings.Enqueue(formatter(state, exception));
            }
            if (logLevel >= LogLevel.Error)
            {
                var line = formatter(state, exception);
                for (var inner = exception; inner is not null; inner = inner.InnerException)
                {
                    line += " | " + inner.Message;
                }
                errors.Enqueue(line);
            }
        }
    }
}
