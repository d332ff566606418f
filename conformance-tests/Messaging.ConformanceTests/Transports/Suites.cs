using Messaging.ConformanceTests.Cases;
using Messaging.ConformanceTests.Infrastructure;

[assembly: AssemblyFixture(typeof(Ledger))]

namespace Messaging.ConformanceTests.Transports;

public sealed class InMemoryConformance(InMemoryFixture fixture) : ConformanceSuite<InMemoryFixture>(fixture);

/// <summary>Everything that talks to the shared RabbitMQ runs in one collection, so the broker-restart case never overlaps another test.</summary>
[CollectionDefinition(Name)]
public sealed class RabbitMqCollection
{
    public const string Name = "RabbitMQ broker";
}

[Collection(RabbitMqCollection.Name)]
public sealed class RabbitMqConformance(RabbitMqFixture fixture) : ConformanceSuite<RabbitMqFixture>(fixture);

public sealed class PubSubConformance(PubSubFixture fixture) : ConformanceSuite<PubSubFixture>(fixture);

public sealed class AwsConformance(AwsFixture fixture) : ConformanceSuite<AwsFixture>(fixture);

/// <summary>The Service Bus suite runs in its own collection: its restart case stops the endpoint every other case of it uses.</summary>
[CollectionDefinition(Name)]
public sealed class ServiceBusCollection
{
    public const string Name = "Service Bus";
}

[Collection(ServiceBusCollection.Name)]
public sealed class ServiceBusConformance(ServiceBusFixture fixture) : ConformanceSuite<ServiceBusFixture>(fixture);
