using System.Buffers.Binary;
using System.Diagnostics;

namespace Messaging.Benchmarks.Harness;

/// <summary>Counts received events and, for the latency scenario, records publish-to-handle latency from a timestamp in the payload.</summary>
internal sealed class Recorder
{
    private readonly object _gate = new();
    private readonly List<double> _latenciesMs = [];
    private int _received;
    private TaskCompletionSource _target = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _targetCount = int.MaxValue;

    public bool RecordLatency { get; set; }

    public int Received => Volatile.Read(ref _received);

    public static byte[] Payload(int size)
    {
        var payload = new byte[size];
        BinaryPrimitives.WriteInt64LittleEndian(payload, Stopwatch.GetTimestamp());
        return payload;
    }

    public void OnReceived(ReadOnlySpan<byte> payload)
    {
        if (RecordLatency && payload.Length >= 8)
        {
            var sent = BinaryPrimitives.ReadInt64LittleEndian(payload);
            var ms = Stopwatch.GetElapsedTime(sent).TotalMilliseconds;
            lock (_gate)
            {
                _latenciesMs.Add(ms);
            }
        }
        if (Interlocked.Increment(ref _received) >= Volatile.Read(ref _targetCount))
        {
            _target.TrySetResult();
        }
    }

    public Task WaitForAsync(int count, TimeSpan timeout)
    {
        Volatile.Write(ref _targetCount, count);
        if (Received >= count)
        {
            _target.TrySetResult();
        }
        return _target.Task.WaitAsync(timeout);
    }

    public (double P50, double P95, double P99) Percentiles()
    {
        lock (_gate)
        {
            if (_latenciesMs.Count == 0)
            {
                return (double.NaN, double.NaN, double.NaN);
            }
            var sorted = _latenciesMs.Order().ToArray();
            double At(double q) => sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(q * sorted.Length) - 1)];
            return (At(0.50), At(0.95), At(0.99));
        }
    }
}
