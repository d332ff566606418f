using CloudNative.CloudEvents;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.ConformanceTests.Transports;
using Messaging.DeadLetters;
using Messaging.PubSub;
using Messaging.PubSub.Grpc;
using Messaging.Topology;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Messaging.ConformanceTests.PubSub;

/// <summary>
/// Faults of a production Pub/Sub, caused on the emulator through its admin REST API (resources deleted behind the
/// transport's back), and the publisher's queue under cancellation and back-pressure.
/// </summary>
public sealed class PubSubFaultTests(PubSubFixture fixture) : IClassFixture<PubSubFixture>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private void RequireEmulator()
    {
        if (fixture.UnavailableReason is { } reason)
        {
            Assert.SkipWhen(Environment.GetEnvironmentVariable("MESSAGING_CONFORMANCE_REQUIRE") is null, reason);
            Assert.Fail(reason);
        }
    }

    private static (string Topic, string Subscription) NewNames(string label)
    {
        var topic = $"ct-{label}-{Guid.NewGuid().ToString("N")[..8]}";
        return (topic, topic + "-sub");
    }

    private static CloudEvent Event(string? orderingKey = null)
    {
        var cloudEvent = new CloudEvent
        {
            Id = Guid.NewGuid().ToString(),
            Source = new Uri("urn:test"),
            Type = "com.example.fault",
            DataContentType = "text/plain",
            Data = "x"u8.ToArray(),
        };
        if (orderingKey is not null)
        {
            cloudEvent[PubSubCodec.PartitionKeyAttribute] = orderingKey;
        }
        return cloudEvent;
    }

    private static MessagingTopology Topology(string topic, string subscription) =>
        new([topic], [new SubscriptionDefinition { Name = subscription, Topic = topic }]);

    // ---- dead letters ------------------------------------------------------------------------------------

    [Fact(Timeout = 120_000)]
    public async Task A_rejected_event_goes_back_while_the_dead_letter_subscription_is_missing_and_is_dead_lettered_once_it_is_back()
    {
        RequireEmulator();
        var (topic, subscription) = NewNames("dlmiss");
        var deadLetterSubscription = PubSubNames.DeadLetter(subscription);
        var logs = new CapturingLoggerFactory();
        var probe = new Probe
        {
            Behaviour = (context, _) =>
            {
                context.Reject("rejected by the test");
                return Task.CompletedTask;
            },
        };
        try
        {
            await using var host = await ConformanceHost.StartAsync(fixture, probe,
                m => m.AddSubscription(subscription, topic, s => s.HandleCloudEvents<ProbeHandler>()),
                services: s => s.AddSingleton<ILoggerProvider>(logs));

            // Someone deletes the dead-letter subscription: its topic then keeps nothing published to it.
            await fixture.AdminDeleteAsync("subscriptions/" + deadLetterSubscription, Ct);
            var rejected = Event();
            await host.Publisher.PublishAsync(topic, rejected, Ct);

            // The dead letter is not published to nowhere and the original is not acknowledged: the settlement fails with
            // an error naming the missing subscription and the setting, and the message goes back to the subscription.
            await Wait.UntilAsync(
                () => logs.Errors.Any(e => e.Contains(deadLetterSubscription, StringComparison.Ordinal) && e.Contains("Messaging:Provisioning", StringComparison.Ordinal)),
                "an error names the missing dead-letter subscription and Messaging:Provisioning");

            // Once the subscription is provisioned again, the event comes back and ends up among the dead letters.
            await host.Transport.ProvisionAsync(Topology(topic, subscription), Ct);
            var letters = await Wait.UntilAsync(() => host.DeadLetters.PeekAsync(subscription, 100, Ct), d => d.Any(l => l.Event?.Id == rejected.Id),
                "the rejected event is in the dead-letter store", TimeSpan.FromSeconds(60));
            Assert.Equal(DeadLetterReason.Rejected, letters.First(l => l.Event?.Id == rejected.Id).Metadata.Reason);
            Assert.True(probe.AttemptsOf(rejected.Id!).Count() >= 2, "the event was delivered again after the failed dead-letter settlement");
        }
        finally
        {
            await fixture.DeleteSubscriptionAsync(topic, subscription);
        }
    }
}
