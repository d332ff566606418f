using System.Threading.Channels;

namespace Messaging.Benchmarks.Harness;

/// <summary>The floor for the in-memory transport: a bare bounded <see cref="Channel{T}"/> with one reader loop.</summary>
internal sealed class ChannelTarget : IBenchTarget
{
    private Channel<byte[]>? _channel;
    private Task _reader = Task.CompletedTask;

    public string Name => "bare Channel<T>";

    public Task StartAsync(bool consume, Recorder recorder, CancellationToken cancellationToken)
    {
        _channel = Channel.CreateBounded<byte[]>(new BoundedChannelOptions(100_000) { SingleReader = true });
        if (consume)
        {
            var reader = _channel.Reader;
            _reader = Task.Run(async () =>
            {
                await foreach (var item in reader.ReadAllAsync())
                {
                    recorder.OnReceived(item);
                }
            }, cancellationToken);
        }
        return Task.CompletedTask;
    }

    public async Task PublishManyAsync(int count, int size, CancellationToken cancellationToken)
    {
        for (var i = 0; i < count; i++)
        {
            await _channel!.Writer.WriteAsync(Recorder.Payload(size), cancellationToken);
        }
    }

    public Task PublishOneAsync(byte[] payload, CancellationToken cancellationToken) => _channel!.Writer.WriteAsync(payload, cancellationToken).AsTask();

    public async Task StopAsync()
    {
        _channel?.Writer.TryComplete();
        await _reader;
    }

    public ValueTask DisposeAsync() => new(StopAsync());
}
