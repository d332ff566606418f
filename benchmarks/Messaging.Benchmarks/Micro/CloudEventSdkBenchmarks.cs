using BenchmarkDotNet.Attributes;
using CloudNative.CloudEvents;

namespace Messaging.Benchmarks.Micro;

/// <summary>
/// What the CloudEvents SDK itself costs per event, whatever the transport: building the event a publisher hands over
/// (every attribute is validated as it is set; <c>datacontenttype</c> is parsed as a MIME type), and the copy a consumer
/// gets. A transport that hands handlers a <see cref="CloudEvent"/> pays this on both sides; a bare channel of byte arrays
/// pays none of it.
/// </summary>
[MemoryDiagnoser]
public class CloudEventSdkBenchmarks
{
    private static readonly Uri Source = new("urn:bench");
    private readonly byte[] _payload = new byte[1024];

    [Benchmark]
    public CloudEvent BuildEvent() => Build("4f0c8a52-2b7a-4d8e-9a55-3e7f3b1c9d10", _payload);

    /// <summary>A 1 KB event as the benchmarks' publishers build it.</summary>
    internal static CloudEvent Build(string id, byte[] payload) => new()
    {
        Id = id,
        Source = Source,
        Type = "com.example.bench",
        DataContentType = "application/octet-stream",
        Data = payload,
    };

    [Benchmark]
    public CloudEvent BuildEventWithoutContentType() => new()
    {
        Id = "4f0c8a52-2b7a-4d8e-9a55-3e7f3b1c9d10",
        Source = Source,
        Type = "com.example.bench",
        Data = _payload,
    };

    /// <summary>An event id as most producers make one; the runtime reads the system's secure generator each time.</summary>
    [Benchmark]
    public string NewGuidString() => Guid.NewGuid().ToString();

    [Benchmark]
    public string GuidVersion7String() => Guid.CreateVersion7().ToString();

    /// <summary>The ids this library's typed publish gives events (UUIDv7, the secure generator read for 409 ids at a time).</summary>
    [Benchmark]
    public string LibraryEventId() => Messaging.Publishing.EventIds.NewId(DateTimeOffset.UtcNow);
}
