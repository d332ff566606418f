using System.Diagnostics;
using System.Diagnostics.Metrics;
using CloudNative.CloudEvents;

namespace Messaging.Diagnostics;

/// <summary>
/// Tracing and metrics following the OpenTelemetry messaging semantic conventions. Listen to the
/// <see cref="SourceName"/> activity source and meter (for example <c>AddSource("Messaging")</c> and <c>AddMeter("Messaging")</c>).
/// Trace context travels with the event as the CloudEvents distributed-tracing extension (<c>traceparent</c>, <c>tracestate</c>).
/// </summary>
public static class MessagingDiagnostics
{
    /// <summary>Name of the <see cref="ActivitySource"/> and the <see cref="Meter"/>.</summary>
    public const string SourceName = "Messaging";

    /// <summary>The CloudEvent extension attribute carrying the W3C <c>traceparent</c> of the publishing activity.</summary>
    public const string TraceParentAttribute = "traceparent";
    /// <summary>The CloudEvent extension attribute carrying the W3C <c>tracestate</c>, when the activity has one.</summary>
    public const string TraceStateAttribute = "tracestate";

    internal static readonly ActivitySource ActivitySource = new(SourceName, "1.0.0");
    internal static readonly Meter Meter = new(SourceName, "1.0.0");

    internal static readonly Counter<long> SentMessages = Meter.CreateCounter<long>("messaging.client.sent.messages", "{message}", "Events published and accepted by the broker.");
    internal static readonly Counter<long> ConsumedMessages = Meter.CreateCounter<long>("messaging.client.consumed.messages", "{message}", "Events delivered to this process.");
    internal static readonly Counter<long> FailedMessages = Meter.CreateCounter<long>("messaging.process.failed.messages", "{message}", "Handler attempts that failed and were scheduled for retry or dead-lettered.");
    internal static readonly Counter<long> DeadLetteredMessages = Meter.CreateCounter<long>("messaging.process.dead_lettered.messages", "{message}", "Events moved to a dead-letter destination.");
    internal static readonly Counter<long> ReturnedMessages = Meter.CreateCounter<long>("messaging.receive.returned.messages", "{message}", "Messages given back to the broker unsettled (stop, abort, failed settlement).");
    internal static readonly Counter<long> SettleFailures = Meter.CreateCounter<long>("messaging.receive.settle_failures", "{message}", "Settlements (complete, retry, dead-letter) the broker did not accept.");
    internal static readonly Counter<long> LostLeases = Meter.CreateCounter<long>("messaging.receive.lost_leases", "{message}", "Messages whose lock or lease the broker took back while they were held.");
    internal static readonly Histogram<double> ProcessDuration = Meter.CreateHistogram<double>("messaging.process.duration", "s", "Duration of handling one event.");

    // The backlog gauges report what the running backlog pollers last read; their callbacks never call the broker.
    internal static readonly ObservableGauge<long> SubscriptionBacklog = Meter.CreateObservableGauge(
        "messaging.subscription.backlog", () => BacklogPoller.Observe(b => b.Waiting), "{message}",
        "Messages waiting in the subscription's queue, as the broker last reported them.");
    internal static readonly ObservableGauge<long> SubscriptionDeadLetters = Meter.CreateObservableGauge(
        "messaging.subscription.dead_letters", () => BacklogPoller.Observe(b => b.DeadLetters), "{message}",
        "Messages in the subscription's dead-letter destination, as the broker last reported them.");
    internal static readonly ObservableGauge<double> SubscriptionOldestMessageAge = Meter.CreateObservableGauge(
        "messaging.subscription.oldest_message.age", () => BacklogPoller.Observe(b => b.OldestAge?.TotalSeconds), "s",
        "How long the oldest waiting message of the subscription had waited, as the broker last reported it.");

    /// <summary>The CloudEvents extension attributes the library itself understands.</summary>
    public static IReadOnlyList<CloudEventAttribute> ExtensionAttributes { get; } =
    [
        CloudEventAttribute.CreateExtension(TraceParentAttribute, CloudEventAttributeType.String),
        CloudEventAttribute.CreateExtension(TraceStateAttribute, CloudEventAttributeType.String),
    ];

    internal static Activity? StartPublish(string transport, string topic, int batchSize)
    {
        var activity = ActivitySource.StartActivity($"publish {topic}", ActivityKind.Producer);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag("messaging.system", transport);
            activity.SetTag("messaging.operation.type", "send");
            activity.SetTag("messaging.operation.name", "publish");
            activity.SetTag("messaging.destination.name", topic);
            if (batchSize != 1)
            {
                activity.SetTag("messaging.batch.message_count", batchSize);
            }
        }
        return activity;
    }

    /// <summary>Stamps the current trace context on an event that carries none.</summary>
    internal static void Inject(CloudEvent cloudEvent, Activity? activity)
    {
        if (activity is null || cloudEvent[TraceParentAttribute] is not null)
        {
            return;
        }
        cloudEvent[TraceParentAttribute] = activity.Id;
        if (!string.IsNullOrEmpty(activity.TraceStateString))
        {
            cloudEvent[TraceStateAttribute] = activity.TraceStateString;
        }
    }

    internal static Activity? StartProcess(string transport, string topic, string subscription, CloudEvent cloudEvent, int attempt)
    {
        ActivityContext parent = default;
        if (cloudEvent[TraceParentAttribute] is string traceParent)
        {
            ActivityContext.TryParse(traceParent, cloudEvent[TraceStateAttribute] as string, isRemote: true, out parent);
        }
        var activity = ActivitySource.StartActivity($"process {subscription}", ActivityKind.Consumer, parent);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag("messaging.system", transport);
            activity.SetTag("messaging.operation.type", "process");
            activity.SetTag("messaging.destination.name", topic);
            activity.SetTag("messaging.destination.subscription.name", subscription);
            activity.SetTag("messaging.consumer.group.name", subscription);
            activity.SetTag("messaging.message.id", cloudEvent.Id);
            activity.SetTag("cloudevents.event_id", cloudEvent.Id);
            activity.SetTag("cloudevents.event_type", cloudEvent.Type);
            activity.SetTag("cloudevents.event_source", cloudEvent.Source?.ToString());
            activity.SetTag("messaging.delivery.attempt", attempt);
        }
        return activity;
    }
}
