using Messaging.ConformanceTests.Cases;
using Messaging.ConformanceTests.Infrastructure;

[assembly: AssemblyFixture(typeof(Ledger))]

namespace Messaging.ConformanceTests.Transports;

public sealed class InMemoryConformance(InMemoryFixture fixture) : ConformanceSuite<InMemoryFixture>(fixture);

public sealed class RabbitMqConformance(RabbitMqFixture fixture) : ConformanceSuite<RabbitMqFixture>(fixture);
