using System.Diagnostics;
using System.Text.Json;
using CloudNative.CloudEvents;
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

        var attempt = delivery.Attempt;
        while (true)
        {
            var failure = await AttemptAsync(delivery, cloudEvent, matching, attempt, cancellationToken).ConfigureAwait(false);
            if (failure is null)
            {
                return; // settled
            }
            var policy = _subscription.Retry;
            if (attempt >= policy.MaxAttempts)
            {
                LogExhausted(failure, cloudEvent.Id, _subscription.Name, attempt);
                await DeadLetterAsync(delivery, DeadLetterReason.MaxAttemptsExceeded,
                    $"The handler failed on all {policy.MaxAttempts} attempt(s).", failure, cancellationToken, attempt).ConfigureAwait(false);
                return;
            }
            var delay = policy.DelayAfter(attempt);
            if (!delivery.RetriesInPlace)
            {
                LogRetry(failure, cloudEvent.Id, _subscription.Name, attempt, policy.MaxAttempts, delay);
                await delivery.RetryAsync(delay, cancellationToken).ConfigureAwait(false);
                return;
            }
            // An ordered key: the broker's retry would let later events of the key overtake this one, so the key waits here.
            LogRetryHeld(failure, cloudEvent.Id, _subscription.Name, attempt, policy.MaxAttempts, delay);
            if (!await BackoffAsync(delay, delivery.StopRequested, cancellationToken).ConfigureAwait(false))
            {
                // The consumer stops: the broker delivers it again (to this or another consumer), still ahead of its key.
                LogHeldRetryGivenBack(cloudEvent.Id, _subscription.Name, attempt);
                await delivery.GiveBackAsync().ConfigureAwait(false);
                return;
            }
            attempt++;
        }
    }

    /// <summary>
    /// Runs the handlers once. Returns null when the delivery was settled (completed, or dead-lettered as rejected or
    /// invalid), or the exception of a failed attempt, which the caller retries or dead-letters.
    /// </summary>
    private async Task<Exception?> AttemptAsync(ITransportDelivery delivery, CloudEvent cloudEvent, HandlerRegistration[] matching, int attempt, CancellationToken cancellationToken)
    {
        using var activity = MessagingDiagnostics.StartProcess(_transport, _subscription.Topic, _subscription.Name, cloudEvent, attempt);
        var started = Stopwatch.GetTimestamp();
        string? rejection;
        try
        {
            await using var scope = _scopes.CreateAsyncScope();
            var context = new EventContext(cloudEvent, attempt, _subscription.Name, _subscription.Topic, scope.ServiceProvider);
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
            await DeadLetterAsync(delivery, DeadLetterReason.Rejected, ex.Message, ex, cancellationToken, attempt).ConfigureAwait(false);
            return null;
        }
        catch (EventDataException ex)
        {
            RecordDuration(started, "invalid");
            activity?.SetStatus(ActivityStatusCode.Error, ex.Message);
            await DeadLetterAsync(delivery, DeadLetterReason.InvalidMessage, ex.Message, ex, cancellationToken, attempt).ConfigureAwait(false);
            return null;
        }
        catch (Exception ex)
        {
            RecordDuration(started, ex.GetType().FullName);
            activity?.SetStatus(ActivityStatusCode.Error, ex.Message);
            activity?.AddException(ex);
            MessagingDiagnostics.FailedMessages.Add(1, _metricTags);
            return ex;
        }

        RecordDuration(started, rejection is null ? null : "rejected");
        if (rejection is not null)
        {
            await DeadLetterAsync(delivery, DeadLetterReason.Rejected, rejection, null, cancellationToken, attempt).ConfigureAwait(false);
            return null;
        }
        await delivery.CompleteAsync(cancellationToken).ConfigureAwait(false);
        return null;
    }

    /// <summary>Waits out a held retry's backoff; false when the consumer started to stop meanwhile.</summary>
    private async Task<bool> BackoffAsync(TimeSpan delay, CancellationToken stopRequested, CancellationToken cancellationToken)
    {
        if (stopRequested.IsCancellationRequested)
        {
            return false;
        }
        if (delay <= TimeSpan.Zero)
        {
            return true;
        }
        using var either = CancellationTokenSource.CreateLinkedTokenSource(stopRequested, cancellationToken);
        try
        {
            await Task.Delay(delay, _time, either.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }

    private async Task DeadLetterAsync(ITransportDelivery delivery, DeadLetterReason reason, string description, Exception? exception, CancellationToken cancellationToken, int? attempt = null)
    {
        var metadata = new DeadLetterMetadata
        {
            Reason = reason,
            Description = description,
            ExceptionType = exception?.GetType().FullName,
            ExceptionMessage = exception?.Message,
            AttemptCount = attempt ?? delivery.Attempt,
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

    [LoggerMessage(Level = LogLevel.Warning, Message = "Event {EventId} on subscription {Subscription} failed on attempt {Attempt} of {MaxAttempts}; its ordering key waits, retrying here in {Delay}")]
    private partial void LogRetryHeld(Exception exception, string? eventId, string subscription, int attempt, int maxAttempts, TimeSpan delay);

    [LoggerMessage(Level = LogLevel.Information, Message = "Event {EventId} on subscription {Subscription} waited to retry after attempt {Attempt} when the consumer stopped; it was given back to the broker")]
    private partial void LogHeldRetryGivenBack(string? eventId, string subscription, int attempt);

    [LoggerMessage(Level = LogLevel.Error, Message = "Event {EventId} on subscription {Subscription} failed on its last attempt ({Attempt}) and was dead-lettered")]
    private partial void LogExhausted(Exception exception, string? eventId, string subscription, int attempt);
}
