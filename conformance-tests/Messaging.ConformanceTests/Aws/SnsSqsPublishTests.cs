using System.Text;
using CloudNative.CloudEvents;
using Messaging.Aws;
using Messaging.Aws.Sns;
using Microsoft.Extensions.Logging.Abstractions;

namespace Messaging.ConformanceTests.Aws;

/// <summary>Publishing through a scripted <see cref="ISnsClient"/>: batching limits and handling of partially failed batches.</summary>
public sealed class SnsSqsPublishTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private sealed class ScriptedSns(Func<int, IReadOnlyList<SnsBatchEntry>, IReadOnlyList<SnsBatchFailure>> answer) : ISnsClient
    {
        public List<IReadOnlyList<SnsBatchEntry>> Batches { get; } = [];

        public Task<IReadOnlyList<SnsBatchFailure>> PublishBatchAsync(string topicArn, IReadOnlyList<SnsBatchEntry> entries, CancellationToken cancellationToken)
        {
            lock (Batches)
            {
                Batches.Add(entries);
                return Task.FromResult(answer(Batches.Count, entries));
            }
        }

        public Task<string> CreateTopicAsync(string name, CancellationToken cancellationToken) => Task.FromResult("arn:aws:sns:us-east-1:000000000000:" + name);

        public Task<string> CreateFifoTopicAsync(string name, CancellationToken cancellationToken) => Task.FromResult("arn:aws:sns:us-east-1:000000000000:" + name);

        /// <summary>No topic has attributes here: a publish finds no FIFO topic and goes to the standard one.</summary>
        public Task<IReadOnlyDictionary<string, string>?> GetTopicAttributesAsync(string topicArn, CancellationToken cancellationToken) =>
            Task.FromResult<IReadOnlyDictionary<string, string>?>(null);

        public Task<string?> FindTopicArnAsync(string name, CancellationToken cancellationToken) => Task.FromResult<string?>(null);

        public Task<string> SubscribeQueueAsync(string topicArn, string queueArn, bool? rawMessageDelivery, CancellationToken cancellationToken) => throw new NotSupportedException();

        public Task SetSubscriptionAttributeAsync(string subscriptionArn, string attributeName, string attributeValue, CancellationToken cancellationToken) => throw new NotSupportedException();

        public Task<string> PublishAsync(string topicArn, SnsMessage message, CancellationToken cancellationToken) => Task.FromResult("single");

        public Task UnsubscribeAsync(string subscriptionArn, CancellationToken cancellationToken) => throw new NotSupportedException();

        public Task DeleteTopicAsync(string topicArn, CancellationToken cancellationToken) => throw new NotSupportedException();

        public void Dispose()
        {
        }
    }

    private static SnsSqsTransport Transport(ISnsClient sns) => new(
        new SnsSqsTransportOptions { ServiceUrl = "http://127.0.0.1:9/", Region = "us-east-1", AccessKeyId = "k", SecretAccessKey = "s", AccountId = "000000000000" },
        [], NullLoggerFactory.Instance, sns);

    private static CloudEvent Event(int i, int dataBytes = 10) => new()
    {
        Id = $"e-{i}", Source = new Uri("urn:t"), Type = "t", DataContentType = "text/plain", Data = Encoding.UTF8.GetBytes(new string('x', dataBytes)),
    };

    [Fact]
    public void Batches_hold_at_most_10_entries_and_256_KiB()
    {
        var codec = new SnsSqsCodec([]);
        var small = Enumerable.Range(0, 23).Select(i => codec.Encode(Event(i))).ToList();
        Assert.Equal([10, 10, 3], SnsSqsTransport.Batch(small).Select(b => b.Count));
        var large = Enumerable.Range(0, 5).Select(i => codec.Encode(Event(i, 100_000))).ToList();
        var batches = SnsSqsTransport.Batch(large);
        Assert.Equal([2, 2, 1], batches.Select(b => b.Count));
        Assert.All(batches, b => Assert.True(b.Sum(m => m.WireSize) <= SnsSqsCodec.MaxWireBytes));
    }

    [Fact]
    public async Task Entries_SNS_failed_on_its_side_are_sent_again_alone()
    {
        var sns = new ScriptedSns((call, entries) => call == 1 ? [new SnsBatchFailure("3", "InternalError", "try again", SenderFault: false)] : []);
        await using var transport = Transport(sns);
        await transport.PublishAsync("orders", Enumerable.Range(0, 5).Select(i => Event(i)).ToList(), Ct);
        Assert.Equal(2, sns.Batches.Count);
        Assert.Equal(5, sns.Batches[0].Count);
        var again = Assert.Single(sns.Batches[1]);
        Assert.Equal("3", again.Id);
        Assert.Equal(sns.Batches[0][3].Message, again.Message);
    }

    [Fact]
    public async Task An_entry_SNS_refuses_fails_the_publish_with_its_code()
    {
        var sns = new ScriptedSns((_, _) => [new SnsBatchFailure("1", "InvalidParameter", "bad attribute", SenderFault: true)]);
        await using var transport = Transport(sns);
        var error = await Assert.ThrowsAsync<SnsException>(() => transport.PublishAsync("orders", [Event(0), Event(1)], Ct));
        Assert.Equal("InvalidParameter", error.ErrorCode);
        Assert.Contains("bad attribute", error.Message, StringComparison.Ordinal);
        Assert.Single(sns.Batches); // not retried
    }

    [Fact]
    public async Task An_oversized_event_fails_the_whole_call_before_anything_is_sent()
    {
        var sns = new ScriptedSns((_, _) => []);
        await using var transport = Transport(sns);
        var oversized = Event(1);
        oversized.Data = new byte[SnsSqsCodec.DefaultMaxEventSizeBytes + 1];
        await Assert.ThrowsAsync<Messaging.Envelope.EventTooLargeException>(() => transport.PublishAsync("orders", [Event(0), oversized], Ct));
        Assert.Empty(sns.Batches);
    }
}
