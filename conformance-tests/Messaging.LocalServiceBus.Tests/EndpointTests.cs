using System.Net.Sockets;
using Azure.Messaging.ServiceBus;

namespace Messaging.LocalServiceBus.Tests;

public sealed class EndpointTests
{
    static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Outage_drops_connections_keeps_state_and_the_sdk_recovers()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("durable", cancellationToken: Ct);
        await using var sender = bus.Client.CreateSender("durable");
        await sender.SendMessageAsync(new ServiceBusMessage("before"), Ct);

        var admin = new Azure.Messaging.ServiceBus.Administration.ServiceBusAdministrationClient(
            bus.Endpoint.AdministrationConnectionString, new Azure.Messaging.ServiceBus.Administration.ServiceBusAdministrationClientOptions { Retry = { MaxRetries = 0 } });
        await bus.Endpoint.StopListeningAsync(Ct);
        foreach (var port in new[] { bus.Endpoint.AmqpPort, bus.Endpoint.ManagementPort })
        {
            using var probe = new TcpClient();
            await Assert.ThrowsAnyAsync<SocketException>(() => probe.ConnectAsync("127.0.0.1", port, Ct).AsTask());
        }

        await bus.Endpoint.StartListeningAsync(Ct);
        await sender.SendMessageAsync(new ServiceBusMessage("after"), Ct);
        Assert.True((await admin.QueueExistsAsync("durable", Ct)).Value);

        await using var receiver = bus.Client.CreateReceiver("durable", new ServiceBusReceiverOptions { ReceiveMode = ServiceBusReceiveMode.ReceiveAndDelete });
        var received = await QueueTests.ReceiveAtLeastAsync(receiver, 2);
        Assert.Equal(["before", "after"], received.Select(m => m.Body.ToString()));
    }

    [Fact]
    public async Task Outage_while_a_receiver_waits_is_survived_by_the_processor()
    {
        await using var bus = await LocalBus.StartAsync();
        await bus.Endpoint.CreateQueueAsync("jobs", new LocalQueueOptions { LockDuration = TimeSpan.FromSeconds(30) }, Ct);
        var seen = new System.Collections.Concurrent.ConcurrentQueue<string>();
        await using var processor = bus.Client.CreateProcessor("jobs", new ServiceBusProcessorOptions { AutoCompleteMessages = true, MaxConcurrentCalls = 1 });
        processor.ProcessMessageAsync += args =>
        {
            seen.Enqueue(args.Message.Body.ToString());
            return Task.CompletedTask;
        };
        processor.ProcessErrorAsync += _ => Task.CompletedTask;
        await processor.StartProcessingAsync(Ct);
        await using var sender = bus.Client.CreateSender("jobs");
        await sender.SendMessageAsync(new ServiceBusMessage("one"), Ct);
        await WaitUntilAsync(() => seen.Contains("one"));
        // The handler runs before auto-complete reaches the endpoint; an outage in between would drop the complete and
        // legitimately redeliver "one". Peek shows locked messages too, so an empty peek means the complete arrived.
        await using var peeker = bus.Client.CreateReceiver("jobs");
        var deadline = DateTime.UtcNow + LocalBus.Patience;
        while (await peeker.PeekMessageAsync(fromSequenceNumber: 0, cancellationToken: Ct) is not null)
        {
            Assert.True(DateTime.UtcNow < deadline, "the processor's complete of \"one\" did not reach the endpoint in time");
            await Task.Delay(50, Ct);
        }

        await bus.Endpoint.StopListeningAsync(Ct);
        await bus.Endpoint.StartListeningAsync(Ct);
        await sender.SendMessageAsync(new ServiceBusMessage("two"), Ct);

        await WaitUntilAsync(() => seen.Contains("two"), TimeSpan.FromSeconds(60));
        await processor.StopProcessingAsync(Ct);
        Assert.Equal(["one", "two"], seen);
    }

    [Fact]
    public async Task Topology_is_read_from_an_emulator_config_file()
    {
        const string config = """
        {
          "UserConfig": {
            "Namespaces": [
              {
                "Name": "sbemulatorns",
                "Queues": [
                  { "Name": "queue.1", "Properties": { "DeadLetteringOnMessageExpiration": false, "DefaultMessageTimeToLive": "PT1H", "ForwardDeadLetteredMessagesTo": "", "ForwardTo": "", "LockDuration": "PT5S", "MaxDeliveryCount": 3, "RequiresDuplicateDetection": false, "RequiresSession": false } }
                ],
                "Topics": [
                  { "Name": "topic.1", "Properties": { "DefaultMessageTimeToLive": "PT1H", "RequiresDuplicateDetection": false },
                    "Subscriptions": [ { "Name": "subscription.1", "Properties": { "LockDuration": "PT1M", "MaxDeliveryCount": 5 } } ] }
                ]
              }
            ],
            "Logging": { "Type": "File" }
          }
        }
        """;
        await using var endpoint = await LocalServiceBusEndpoint.StartAsync(new LocalServiceBusOptions { ConfigJson = config }, Ct);
        await using var client = new ServiceBusClient(endpoint.ConnectionString);
        var admin = new Azure.Messaging.ServiceBus.Administration.ServiceBusAdministrationClient(endpoint.AdministrationConnectionString);

        var queue = (await admin.GetQueueAsync("queue.1", Ct)).Value;
        Assert.Equal(3, queue.MaxDeliveryCount);
        Assert.Equal(TimeSpan.FromSeconds(5), queue.LockDuration);
        Assert.Equal(5, (await admin.GetSubscriptionAsync("topic.1", "subscription.1", Ct)).Value.MaxDeliveryCount);
        await using var sender = client.CreateSender("topic.1");
        await sender.SendMessageAsync(new ServiceBusMessage("configured"), Ct);
        await using var receiver = client.CreateReceiver("topic.1", "subscription.1");
        Assert.Equal("configured", (await receiver.ReceiveMessageAsync(LocalBus.Patience, Ct))?.Body.ToString());
    }

    [Fact]
    public async Task Topology_file_is_read_from_its_path()
    {
        var path = Path.Combine(Path.GetTempPath(), $"local-servicebus-{Guid.NewGuid():N}.json");
        await File.WriteAllTextAsync(path, """{ "UserConfig": { "Namespaces": [ { "Name": "ns", "Queues": [ { "Name": "from-file", "Properties": { "MaxDeliveryCount": 2 } } ] } ] } }""", Ct);
        try
        {
            await using var endpoint = await LocalServiceBusEndpoint.StartAsync(new LocalServiceBusOptions { ConfigFilePath = path }, Ct);
            var admin = new Azure.Messaging.ServiceBus.Administration.ServiceBusAdministrationClient(endpoint.AdministrationConnectionString);

            Assert.Equal(2, (await admin.GetQueueAsync("from-file", Ct)).Value.MaxDeliveryCount);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task Config_file_with_rule_filters_is_refused_with_the_reason()
    {
        const string config = """
        { "UserConfig": { "Namespaces": [ { "Name": "ns", "Topics": [ { "Name": "t", "Subscriptions": [
          { "Name": "s", "Rules": [ { "Name": "r", "Properties": { "FilterType": "Sql", "SqlFilter": { "SqlExpression": "a = 1" } } } ] } ] } ] } ] } }
        """;

        var failure = await Assert.ThrowsAsync<NotSupportedException>(() => LocalServiceBusEndpoint.StartAsync(new LocalServiceBusOptions { ConfigJson = config }, Ct));

        Assert.Contains("t/s", failure.Message, StringComparison.Ordinal);
    }

    static async Task WaitUntilAsync(Func<bool> condition, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? LocalBus.Patience);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met in time");
            await Task.Delay(50, Ct);
        }
    }
}
