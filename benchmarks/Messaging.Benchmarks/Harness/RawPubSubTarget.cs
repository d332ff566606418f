using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Messaging.PubSub.Grpc;

namespace Messaging.Benchmarks.Harness;

/// <summary>
/// Pub/Sub over the generated gRPC stubs by hand, done competently: publish in requests of up to 100 messages or 1 MB with up to 8
/// requests in flight; consume with one StreamingPull (1,000 outstanding) acknowledging on the stream after each batch.
/// Each message carries the required CloudEvent attributes (<c>ce-specversion</c>, <c>ce-id</c>, <c>ce-source</c>,
/// <c>ce-type</c>, <c>content-type</c>), the same work the library does for an event.
/// </summary>
internal sealed class RawPubSubTarget(string host, string project) : IBenchTarget
{
    // A StreamingPull response carries many messages at once: 1,000 outstanding 64 KB events exceed gRPC's default 4 MB
    // receive limit, as Google's own clients know (they lift it too).
    private readonly GrpcChannel _channel = GrpcChannel.ForAddress($"http://{host}", new GrpcChannelOptions { MaxReceiveMessageSize = 128 * 1024 * 1024 });
    private CancellationTokenSource? _pull;
    private Task _pullLoop = Task.CompletedTask;
    private string _topic = "";
    private string _subscription = "";

    public string Name => "raw gRPC";

    private Publisher.PublisherClient PublisherClient => new(_channel);

    private Subscriber.SubscriberClient SubscriberClient => new(_channel);

    public async Task StartAsync(bool consume, Recorder recorder, CancellationToken cancellationToken)
    {
        var id = Guid.NewGuid().ToString("N")[..8];
        _topic = $"projects/{project}/topics/bench-raw-{id}";
        _subscription = $"projects/{project}/subscriptions/bench-raw-{id}";
        await PublisherClient.CreateTopicAsync(new Topic { Name = _topic }, cancellationToken: cancellationToken);
        await SubscriberClient.CreateSubscriptionAsync(new Subscription { Name = _subscription, Topic = _topic, AckDeadlineSeconds = 60 }, cancellationToken: cancellationToken);
        if (consume)
        {
            _pull = new CancellationTokenSource();
            var token = _pull.Token;
            _pullLoop = Task.Run(async () =>
            {
                using var call = SubscriberClient.StreamingPull(cancellationToken: token);
                await call.RequestStream.WriteAsync(new StreamingPullRequest { Subscription = _subscription, StreamAckDeadlineSeconds = 60, MaxOutstandingMessages = 1000 }, token);
                try
                {
                    while (await call.ResponseStream.MoveNext(token))
                    {
                        var ack = new StreamingPullRequest();
                        foreach (var received in call.ResponseStream.Current.ReceivedMessages)
                        {
                            recorder.OnReceived(received.Message.Data.Span);
                            ack.AckIds.Add(received.AckId);
                        }
                        await call.RequestStream.WriteAsync(ack, token);
                    }
                }
                catch (RpcException) when (token.IsCancellationRequested)
                {
                }
                catch (OperationCanceledException)
                {
                }
            }, cancellationToken);
        }
    }

    public async Task PublishManyAsync(int count, int size, CancellationToken cancellationToken)
    {
        // Requests of at most 100 messages or 1 MB (the official clients' default batch thresholds), up to 8 in flight.
        var inFlight = new Queue<Task>();
        var perRequest = Math.Clamp(1_000_000 / Math.Max(1, size), 1, 100);
        for (var sent = 0; sent < count; sent += perRequest)
        {
            var request = new PublishRequest { Topic = _topic };
            for (var i = sent; i < Math.Min(count, sent + perRequest); i++)
            {
                request.Messages.Add(Message(Recorder.Payload(size)));
            }
            if (inFlight.Count >= 8)
            {
                await inFlight.Dequeue();
            }
            inFlight.Enqueue(PublisherClient.PublishAsync(request, cancellationToken: cancellationToken).ResponseAsync);
        }
        await Task.WhenAll(inFlight);
    }

    public Task PublishOneAsync(byte[] payload, CancellationToken cancellationToken)
    {
        var request = new PublishRequest { Topic = _topic };
        request.Messages.Add(Message(payload));
        return PublisherClient.PublishAsync(request, cancellationToken: cancellationToken).ResponseAsync;
    }

    private static PubsubMessage Message(byte[] payload) => new()
    {
        Data = ByteString.CopyFrom(payload),
        Attributes =
        {
            ["ce-specversion"] = "1.0",
            ["ce-id"] = Guid.NewGuid().ToString(),
            ["ce-source"] = "urn:bench",
            ["ce-type"] = "com.example.bench",
            ["content-type"] = "application/octet-stream",
        },
    };

    public async Task StopAsync()
    {
        if (_pull is not null)
        {
            await _pull.CancelAsync();
            await _pullLoop;
            _pull.Dispose();
            _pull = null;
        }
        if (_topic.Length > 0)
        {
            await SubscriberClient.DeleteSubscriptionAsync(new DeleteSubscriptionRequest { Subscription = _subscription });
            await PublisherClient.DeleteTopicAsync(new DeleteTopicRequest { Topic = _topic });
            _topic = "";
        }
    }

    /// <summary>Removes what the library created for one measurement.</summary>
    public static async Task DeleteAsync(string host, string project, string topic, string subscription)
    {
        using var channel = GrpcChannel.ForAddress($"http://{host}");
        var subscriber = new Subscriber.SubscriberClient(channel);
        var publisher = new Publisher.PublisherClient(channel);
        foreach (var name in new[] { subscription, subscription + ".dead-letter", subscription + ".replay" })
        {
            try
            {
                await subscriber.DeleteSubscriptionAsync(new DeleteSubscriptionRequest { Subscription = $"projects/{project}/subscriptions/{name}" });
            }
            catch (RpcException)
            {
            }
        }
        foreach (var name in new[] { topic, subscription + ".dead-letter", subscription + ".replay" })
        {
            try
            {
                await publisher.DeleteTopicAsync(new DeleteTopicRequest { Topic = $"projects/{project}/topics/{name}" });
            }
            catch (RpcException)
            {
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _channel.Dispose();
    }
}
