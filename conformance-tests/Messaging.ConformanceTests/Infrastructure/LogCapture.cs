using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Messaging.ConformanceTests.Infrastructure;

/// <summary>One log entry as a host under test wrote it: the rendered text and the structured values of its template.</summary>
public sealed record CapturedLog(string Category, LogLevel Level, string Message, IReadOnlyDictionary<string, object?> Values, Exception? Exception)
{
    /// <summary>The message template (<c>{OriginalFormat}</c>), or the rendered text when the entry had none.</summary>
    public string Template => Values.TryGetValue("{OriginalFormat}", out var format) && format is string text ? text : Message;

    /// <summary>The string form of a named template value, or <c>null</c>.</summary>
    public string? Value(string name) => Values.TryGetValue(name, out var value) ? value?.ToString() : null;
}

/// <summary>
/// Captures what a host logs (the host's filter lets Warning and above through), for cases that assert on logs. Add it with
/// <see cref="AddTo"/> from the <c>services</c> callback of <see cref="ConformanceHost.StartAsync"/>.
/// </summary>
public sealed class LogCapture : ILoggerProvider
{
    public ConcurrentQueue<CapturedLog> Entries { get; } = new();

    public void AddTo(IServiceCollection services) => services.AddSingleton<ILoggerProvider>(this);

    public ILogger CreateLogger(string categoryName) => new CapturingLogger(this, categoryName);

    public void Dispose()
    {
        // The entries outlive the host: the case reads them after it stopped.
    }

    private sealed class CapturingLogger(LogCapture owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var values = new Dictionary<string, object?>(StringComparer.Ordinal);
            if (state is IEnumerable<KeyValuePair<string, object?>> pairs)
            {
                foreach (var (key, value) in pairs)
                {
                    values[key] = value;
                }
            }
            owner.Entries.Enqueue(new CapturedLog(category, logLevel, formatter(state, exception), values, exception));
        }
    }
}
