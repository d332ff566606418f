using Grpc.Core;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.PubSub;
using Messaging.PubSub.Grpc;
using Xunit;

namespace Messaging.ConformanceTests.PubSub;

/// <summary>
/// The settlement requests written on a StreamingPull stream: grouped while a write is in flight, never lost when the
/// stream cannot carry them (answered false, so the receiver sends them unary), and the half-close of a graceful stop
/// written only after what was already accepted.
/// </summary>
public sealed class StreamSettlerTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task Acks_asked_while_a_request_is_being_written_go_out_together_in_the_next_request()
    {
        var (stream, settler, first) = await WritingFirstAckAsync(CancellationToken.None);
        var second = settler.AcknowledgeAsync("a2");
        var third = settler.ModifyDeadlineAsync(["m1", "m2"], 30);
        var fourth = settler.AcknowledgeAsync("a3");
        Assert.False(second.IsCompleted);
        stream.ReleaseWrites();

        Assert.True(await first.WaitAsync(Timeout, TestContext.Current.CancellationToken));
        Assert.True(await second.WaitAsync(Timeout, TestContext.Current.CancellationToken));
        Assert.True(await third.WaitAsync(Timeout, TestContext.Current.CancellationToken));
        Assert.True(await fourth.WaitAsync(Timeout, TestContext.Current.CancellationToken));
        Assert.Equal(2, stream.Written.Count);
        Assert.Equal(["a1"], stream.Written[0].AckIds);
        Assert.Equal(["a2", "a3"], stream.Written[1].AckIds);
        Assert.Equal(["m1", "m2"], stream.Written[1].ModifyDeadlineAckIds);
        Assert.Equal([30, 30], stream.Written[1].ModifyDeadlineSeconds);
    }

    [Fact]
    public async Task A_request_larger_than_the_limit_is_split()
    {
        var stream = new FakeRequestStream();
        var settler = new StreamSettler(stream, CancellationToken.None);
        var ids = Enumerable.Range(0, StreamSettler.MaxIdsPerRequest + 10).Select(i => $"id-{i}").ToArray();

        Assert.True(await settler.ModifyDeadlineAsync(ids, 0).WaitAsync(Timeout, TestContext.Current.CancellationToken));

        Assert.Equal(2, stream.Written.Count);
        Assert.Equal(StreamSettler.MaxIdsPerRequest, stream.Written[0].ModifyDeadlineAckIds.Count);
        Assert.Equal(ids, stream.Written.SelectMany(r => r.ModifyDeadlineAckIds));
        Assert.All(stream.Written, r => Assert.Equal(r.ModifyDeadlineAckIds.Count, r.ModifyDeadlineSeconds.Count));
    }

    [Fact]
    public async Task A_failed_write_answers_false_and_so_does_every_later_request()
    {
        var stream = new FakeRequestStream { FailWrites = true };
        var settler = new StreamSettler(stream, CancellationToken.None);

        Assert.False(await settler.AcknowledgeAsync("a1").WaitAsync(Timeout, TestContext.Current.CancellationToken));
        stream.FailWrites = false;
        Assert.False(await settler.AcknowledgeAsync("a2").WaitAsync(Timeout, TestContext.Current.CancellationToken));
        Assert.Empty(stream.Written);
    }

    [Fact]
    public async Task Half_close_is_written_after_the_requests_already_accepted_and_later_ones_are_refused()
    {
        var (stream, settler, first) = await WritingFirstAckAsync(CancellationToken.None);
        var second = settler.AcknowledgeAsync("a2");

        settler.HalfClose();
        var late = settler.AcknowledgeAsync("a3");
        Assert.False(await late.WaitAsync(Timeout, TestContext.Current.CancellationToken));
        Assert.False(stream.Completed);
        stream.ReleaseWrites();

        Assert.True(await first.WaitAsync(Timeout, TestContext.Current.CancellationToken));
        Assert.True(await second.WaitAsync(Timeout, TestContext.Current.CancellationToken));
        await Wait.UntilAsync(() => stream.Completed, "the stream is half-closed", Timeout);
        Assert.Equal(["a1", "a2"], stream.Written.SelectMany(r => r.AckIds));
    }

    [Fact]
    public async Task Abandoning_the_stream_answers_false_to_what_waits_to_be_written()
    {
        var (stream, settler, first) = await WritingFirstAckAsync(CancellationToken.None);
        var waiting = settler.AcknowledgeAsync("a2");

        settler.Abandon();
        stream.ReleaseWrites();

        Assert.True(await first.WaitAsync(Timeout, TestContext.Current.CancellationToken));
        Assert.False(await waiting.WaitAsync(Timeout, TestContext.Current.CancellationToken));
        Assert.False(await settler.AcknowledgeAsync("a3").WaitAsync(Timeout, TestContext.Current.CancellationToken));
        Assert.Equal(["a1"], stream.Written.SelectMany(r => r.AckIds));
    }

    [Fact]
    public async Task A_write_stuck_until_the_stream_is_killed_answers_false()
    {
        using var kill = new CancellationTokenSource();
        var (_, _, stuck) = await WritingFirstAckAsync(kill.Token);

        await kill.CancelAsync();

        Assert.False(await stuck.WaitAsync(Timeout, TestContext.Current.CancellationToken));
    }

    /// <summary>A settler whose first ack ("a1") is being written, the write held until the test releases it.</summary>
    private static async Task<(FakeRequestStream Stream, StreamSettler Settler, Task<bool> First)> WritingFirstAckAsync(CancellationToken streamKilled)
    {
        var stream = new FakeRequestStream();
        var settler = new StreamSettler(stream, streamKilled);
        stream.HoldWrites();
        var first = settler.AcknowledgeAsync("a1");
        await Wait.UntilAsync(() => stream.Started == 1, "the first ack is being written", Timeout);
        return (stream, settler, first);
    }

    /// <summary>A request stream that records what is written, can hold writes, and can fail them.</summary>
    private sealed class FakeRequestStream : IClientStreamWriter<StreamingPullRequest>
    {
        private readonly Lock _lock = new();
        private TaskCompletionSource _release = Released();
        private int _writing;

        public List<StreamingPullRequest> Written { get; } = [];

        private int _started;

        public int Started => Volatile.Read(ref _started);

        public bool FailWrites { get; set; }

        public bool Completed { get; private set; }

        public WriteOptions? WriteOptions { get; set; }

        public void HoldWrites()
        {
            lock (_lock)
            {
                _release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }
        }

        public void ReleaseWrites()
        {
            lock (_lock)
            {
                _release.TrySetResult();
            }
        }

        public Task WriteAsync(StreamingPullRequest message) => WriteAsync(message, CancellationToken.None);

        public async Task WriteAsync(StreamingPullRequest message, CancellationToken cancellationToken)
        {
            if (Interlocked.Exchange(ref _writing, 1) == 1)
            {
                throw new InvalidOperationException("Only one write can be pending at a time.");
            }
            try
            {
                Interlocked.Increment(ref _started);
                if (FailWrites)
                {
                    throw new RpcException(new Status(StatusCode.Unavailable, "the stream broke"));
                }
                Task release;
                lock (_lock)
                {
                    release = _release.Task;
                }
                await release.WaitAsync(cancellationToken);
                lock (_lock)
                {
                    Written.Add(message.Clone());
                }
            }
            finally
            {
                Volatile.Write(ref _writing, 0);
            }
        }

        public Task CompleteAsync()
        {
            if (Volatile.Read(ref _writing) == 1)
            {
                throw new InvalidOperationException("Can't complete the stream while a write is pending.");
            }
            Completed = true;
            return Task.CompletedTask;
        }

        private static TaskCompletionSource Released()
        {
            var released = new TaskCompletionSource();
            released.SetResult();
            return released;
        }
    }
}
