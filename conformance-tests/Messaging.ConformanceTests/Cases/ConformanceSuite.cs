using System.Runtime.CompilerServices;
using CloudNative.CloudEvents;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.Hosting;
using Messaging.Policy;

namespace Messaging.ConformanceTests.Cases;

/// <summary>
/// The shared conformance suite: every case is written once here and runs unchanged against every transport
/// through its fixture. Cases are split over partial files by theme.
/// </summary>
public abstract partial class ConformanceSuite<TFixture>(TFixture fixture) : IClassFixture<TFixture>
    where TFixture : class, ITransportFixture
{
    private readonly List<(string Topic, string Subscription)> _created = [];
    private bool _unsupported;

    protected TFixture Fixture { get; } = fixture;

    protected static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>Runs a case body, records it in the ledger, and cleans up what it created.</summary>
    protected async Task Case(Func<Task> body, [CallerMemberName] string name = "")
    {
        if (Fixture.UnavailableReason is { } reason)
        {
            if (Required(Fixture.TransportName))
            {
                Ledger.Record(name, Fixture.TransportName, "failed (broker unavailable)");
                Assert.Fail($"{Fixture.TransportName} is required by MESSAGING_CONFORMANCE_REQUIRE but unavailable: {reason}");
            }
            Ledger.Record(name, Fixture.TransportName, "skipped (broker unavailable)");
            Assert.Skip(reason);
        }
        _unsupported = false;
        try
        {
            await body();
            Ledger.Record(name, Fixture.TransportName, _unsupported ? "unsupported" : "passed");
        }
        catch (Exception)
        {
            Ledger.Record(name, Fixture.TransportName, "failed");
            throw;
        }
        finally
        {
            foreach (var (topic, subscription) in _created)
            {
                await Fixture.DeleteSubscriptionAsync(topic, subscription);
            }
        }
    }

    /// <summary>Marks the running case as unsupported by declaration (after it verified the refusal).</summary>
    protected void DeclaredUnsupported() => _unsupported = true;

    protected static bool Required(string transport)
    {
        var required = Environment.GetEnvironmentVariable("MESSAGING_CONFORMANCE_REQUIRE");
        if (string.IsNullOrWhiteSpace(required))
        {
            return false;
        }
        return required.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            .Any(r => r.Equals("all", StringComparison.OrdinalIgnoreCase) || r.Equals(transport, StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>Fresh, unique topic and subscription names for one case.</summary>
    protected (string Topic, string Subscription) Names(string label = "s")
    {
        var id = Guid.NewGuid().ToString("N")[..10];
        var names = ($"ct-{id}", $"ct-{id}-{label}");
        _created.Add(names);
        return names;
    }

    protected string SubscriptionOf(string topic, string label)
    {
        var name = $"{topic}-{label}";
        _created.Add((topic, name));
        return name;
    }

    protected Task<ConformanceHost> StartAsync(Probe probe, Action<MessagingBuilder> configure, IDictionary<string, string?>? settings = null) =>
        ConformanceHost.StartAsync(Fixture, probe, configure, settings: settings);

    /// <summary>
    /// A host whose broker leases are long (<see cref="ITransportFixture.UseLongLeases"/>), for a case that asserts each event
    /// is handled exactly once: there a second delivery must mean the library failed, not that a stalled renewal let a short lease lapse.
    /// </summary>
    protected Task<ConformanceHost> StartWithLongLeasesAsync(Probe probe, Action<MessagingBuilder> configure, IDictionary<string, string?>? settings = null) =>
        ConformanceHost.StartAsync(Fixture, probe, configure, Fixture.UseLongLeases, settings);

    /// <summary>A subscription handled by the probe, with a quick retry policy unless the case sets its own.</summary>
    protected static Action<MessagingBuilder> Subscribe(string topic, string subscription, Action<SubscriptionBuilder>? configure = null) =>
        m => m.AddSubscription(subscription, topic, s =>
        {
            s.HandleCloudEvents<ProbeHandler>().WithMaxAttempts(3).WithBackoff(Backoff.Fixed(TimeSpan.FromMilliseconds(100)));
            configure?.Invoke(s);
        });

    protected static CloudEvent NewEvent(string? type = null, byte[]? data = null)
    {
        var id = Guid.NewGuid().ToString();
        return new CloudEvent
        {
            Id = id,
            Source = new Uri("urn:conformance:test"),
            Type = type ?? "com.example.conformance",
            DataContentType = "application/octet-stream",
            Data = data ?? System.Text.Encoding.UTF8.GetBytes($"payload {id}"),
        };
    }
}
