using System.Diagnostics;
using System.Text.Json;
using Messaging.DeadLetters;
using Messaging.Diagnostics;
using Messaging.Topology;
using Messaging.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Messaging.Handling;

/// <summary>
/// Turns one delivery into exactly one settlement: complete, retry after the policy's backoff, or
/// dead-letter with uniform metadata. This is the single place where retry and dead-letter decisions
/// are made, which is why every transport behaves the same.
/// </summary>
internal sealed partial class SubscriptionProcessor
{
    private readonly SubscriptionDefinition _subscription;
    private readonly HandlerRegistration[] _anyType;
    private readonly Dictionary<string, HandlerRegistration[]> _byType;
    private readonly UnhandledEventAction _unhandled;
    private readonly IServiceScopeFactory _scopes;
    private readonly JsonSerializerOptions _json;
    private readonly ILogger _logger;
    private readonly string _transport;
    private readonly TimeProvider _time;
    private readonly KeyValuePair<string, object?>[] _metricTags;

    public SubscriptionProcessor(
        SubscriptionDefinition subscription,
        IEnumerable<HandlerRegistration> handlers,
        UnhandledEventAction unhandled,
        IServiceScopeFactory scopes,
        JsonSerializerOptions json,
        ILogger logger,
        string transport,
        TimeProvider time)
    {
        _subscription = subscription;
        // Routing is fixed once the subscription starts: resolve it once, not per event.
        var all = handlers.ToArray();
        _anyType = all.Where(h => h.EventType is null).ToArray();
        _byType = all.Where(h => h.EventType is not null).Select(h => h.EventType!).Distinct(StringComparer.Ordinal)
            .ToDictionary(type => type, type => all.Where(h => h.EventType is null || h.EventType == type).ToArray(), StringComparer.Ordinal);
        _unhandled = unhandled;
        _scopes = scopes;
        _json = json;
        _logger = logger;
        _transport = transport;
        _time = time;
        _metricTags =
        [
            new("messaging.system", transport),
            new("messaging.destination.name", subscription.Topic),
            new("messaging.destination.subscription.name", subscription.Name),
        ];
    }

    public async Task HandleAsync(ITransportDelivery delivery, CancellationToken cancellationToken)
    {
        MessagingDiagnostics.ConsumedMessages.Add(1, _metricTags);
        var cloudEvent = delivery.Event;
        if (cloudEvent is null)
        {
            LogInvalidMessage(delivery.MessageId, _subscription.Name, delivery.DecodeError);
            await DeadLetterAsync(delivery, DeadLetterReason.InvalidMessage, delivery.DecodeError ?? "The message is not a valid CloudEvent.", null, cancellationToken).ConfigureAwait(false);
            return;
        }

        var matching = Match(cloudEvent.Type);
        if (matching.Length == 0)
        {
            if (_unhandled == UnhandledEventAction.DeadLetter)
            {
                await DeadLetterAsync(delivery, DeadLetterReason.NoHandler, $"No handler of subscription '{_subscription.Name}' accepts CloudEvent type '{cloudEvent.Type}'.", null, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await delivery.CompleteAsync(cancellationToken).ConfigureAwait(false);
            }
            return;
        }

        using var activity = MessagingDiagnostics.StartProcess(_transport, _subscription.Topic, _subscription.Name, cloudEvent, delivery.Attempt);
        var started = Stopwatch.GetTimestamp();
        string? rejection;
        try
        {
            await using var scope = _scopes.CreateAsyncScope();
            var context = new EventContext(cloudEvent, delivery.Attempt, _subscription.Name, _subscription.Topic, scope.ServiceProvider);
            foreach (var handler in matching)
            {
                await handler.InvokeAsync(scope.ServiceProvider, context, _json, cancellationToken).ConfigureAwait(false);
                if (context.RejectionReason is not null)
                {
                    break;
                }
            }
            rejection = context.RejectionReason;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Forced shutdown: leave the delivery unsettled so the broker hands it out again.
            throw;
        }
        catch (UnprocessableEventException ex)
        {
            RecordDuration(started, "rejected");
            activity?.SetStatus(ActivityStatusCode.Error, ex.Message);
            await DeadLetterAsync(delivery, DeadLetterReason.Rejected, ex.Message, ex, cancellationToken).ConfigureAwait(false);
            return;
        }
        catch (EventDataException ex)
        {
            RecordDuration(started, "invalid");
            activity?.SetStatus(ActivityStatusCode.Error, ex.Message);
            await DeadLetterAsync(delivery, DeadLetterReason.InvalidMessage, ex.Message, ex, cancellationToken).ConfigureAwait(false);
            return;
        }
        catch (Exception ex)
        {
            RecordDuration(started, ex.GetType().FullName);
            activity?.SetStatus(ActivityStatusCode.Error, ex.Message);
            activity?.AddException(ex);
            MessagingDiagnostics.FailedMessages.Add(1, _metricTags);
            await FailAsync(delivery, ex, cancellationToken).ConfigureAwait(false);
            return;
        }

        RecordDuration(started, rejection is null ? null : "rejected");
        if (rejection is not null)
        {
            await DeadLetterAsync(delivery, DeadLetterReason.Rejected, rejection, null, cancellationToken).ConfigureAwait(false);
            return;
        }
        await delivery.CompleteAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task FailAsync(ITransportDelivery delivery, Exception exception, CancellationToken cancellationToken)
    {
        var policy = _subscription.Retry;
        if (delivery.Attempt >= policy.MaxAttempts)
        {
            LogExhausted(exception, delivery.Event!.Id, _subscription.Name, delivery.Attempt);
            await DeadLetterAsync(delivery, DeadLetterReason.MaxAttemptsExceeded,
                $"The handler failed on all {policy.MaxAttempts} attempt(s).", exception, cancellationToken).ConfigureAwait(false);
            return;
        }
        var delay = policy.DelayAfter(delivery.Attempt);
        LogRetry(exception, delivery.Event!.Id, _subscription.Name, delivery.Attempt, policy.MaxAttempts, delay);
        await delivery.RetryAsync(delay, cancellationToken).ConfigureAwait(false);
    }

    private async Task DeadLetterAsync(ITransportDelivery delivery, DeadLetterReason reason, string description, Exception? exception, CancellationToken cancellationToken)
    {
        var metadata = new DeadLetterMetadata
        {
            Reason = reason,
            Description = description,
            ExceptionType = exception?.GetType().FullName,
            ExceptionMessage = exception?.Message,
            AttemptCount = delivery.Attempt,
            SourceSubscription = _subscription.Name,
            Time = _time.GetUtcNow(),
        };
        await delivery.DeadLetterAsync(metadata, cancellationToken).ConfigureAwait(false);
        MessagingDiagnostics.DeadLetteredMessages.Add(1, _metricTags);
    }

    /// <summary>The handlers for a CloudEvent type, in registration order: those bound to it and those bound to every type.</summary>
    private HandlerRegistration[] Match(string? eventType) =>
        eventType is not null && _byType.TryGetValue(eventType, out var handlers) ? handlers : _anyType;

    private void RecordDuration(long started, string? errorType)
    {
        var elapsed = Stopwatch.GetElapsedTime(started).TotalSeconds;
        if (errorType is null)
        {
            MessagingDiagnostics.ProcessDuration.Record(elapsed, _metricTags);
        }
        else
        {
            var tags = new TagList(_metricTags) { { "error.type", errorType } };
            MessagingDiagnostics.ProcessDuration.Record(elapsed, tags);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Message {MessageId} on subscription {Subscription} is not a valid CloudEvent and was dead-lettered: {Error}")]
    private partial void LogInvalidMessage(string? messageId, string subscription, string? error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Event {EventId} on subscription {Subscription} failed on attempt {Attempt} of {MaxAttempts}; retrying in {Delay}")]
    private partial void LogRetry(Exception exception, string? eventId, string subscription, int attempt, int maxAttempts, TimeSpan delay);

    [LoggerMessage(Level = LogLevel.Error, Message = "Event {EventId} on subscription {Subscription} failed on its last attempt ({Attempt}) and was dead-lettered")]
    private partial void LogExhausted(Exception exception, string? eventId, string subscription, int attempt);
}
