using BenchmarkDotNet.Attributes;
using Messaging.RabbitMQ;

namespace Messaging.Benchmarks.Micro;

/// <summary>
/// Per-delivery cost of the RabbitMQ consumer's acknowledgement batching (track, ack, flush), without the network:
/// the frame sender only counts. Under load many deliveries share a flush; at low rates each has its own.
/// </summary>
[MemoryDiagnoser]
public class AckBatchingBenchmarks
{
    private const int Deliveries = 100;
    private RabbitMqAckBatcher _batcher = null!;
    private ulong _tag;
    private long _frames;

    [GlobalSetup]
    public void Setup()
    {
        _batcher = new RabbitMqAckBatcher((_, _) =>
        {
            _frames++;
            return ValueTask.CompletedTask;
        }, _ => { }, individualThreshold: 50, linger: TimeSpan.FromMilliseconds(100));
    }

    [GlobalCleanup]
    public ValueTask Cleanup() => _batcher.DisposeAsync();

    [Benchmark(OperationsPerInvoke = Deliveries, Description = "RabbitMQ ack batching, 100 deliveries per flush")]
    public async Task ManyPerFlush()
    {
        for (var i = 0; i < Deliveries; i++)
        {
            _batcher.Ack(_batcher.Track(++_tag));
        }
        await _batcher.FlushAsync();
    }

    [Benchmark(OperationsPerInvoke = Deliveries, Description = "RabbitMQ ack batching, one delivery per flush")]
    public async Task OnePerFlush()
    {
        for (var i = 0; i < Deliveries; i++)
        {
            _batcher.Ack(_batcher.Track(++_tag));
            await _batcher.FlushAsync();
        }
    }
}
