namespace Messaging.ConformanceTests.Infrastructure;

/// <summary>What a test class outside the shared suite needs from its fixture.</summary>
public static class FixtureRequirements
{
    /// <summary>Skips the test when the fixture's broker is unavailable on a laptop; fails it when the run requires brokers (CI).</summary>
    public static void RequireBroker(this ITransportFixture fixture)
    {
        ArgumentNullException.ThrowIfNull(fixture);
        if (fixture.UnavailableReason is { } reason)
        {
            Assert.SkipWhen(Environment.GetEnvironmentVariable("MESSAGING_CONFORMANCE_REQUIRE") is null, reason);
            Assert.Fail(reason);
        }
    }
}
