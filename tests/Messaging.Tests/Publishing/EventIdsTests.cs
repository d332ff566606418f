using Messaging.Publishing;

namespace Messaging.Tests.Publishing;

/// <summary>Event ids: UUIDv7 with the event's time, distinct, also across refills of the random buffer and threads.</summary>
public sealed class EventIdsTests
{
    [Fact]
    public void Ids_are_version_7_uuids_carrying_the_time_in_milliseconds()
    {
        var now = new DateTimeOffset(2026, 12, 1, 7, 0, 0, 123, TimeSpan.Zero);
        var id = Guid.Parse(EventIds.NewId(now));
        Assert.Equal(7, id.Version);
        Assert.Equal(0b10, id.Variant >> 2);
        var bytes = id.ToByteArray(bigEndian: true);
        var ms = ((long)bytes[0] << 40) | ((long)bytes[1] << 32) | ((long)bytes[2] << 24) | ((long)bytes[3] << 16) | ((long)bytes[4] << 8) | bytes[5];
        Assert.Equal(now.ToUnixTimeMilliseconds(), ms);
    }

    [Fact]
    public async Task Ids_are_distinct_across_buffer_refills_and_threads()
    {
        var now = DateTimeOffset.UtcNow;
        var batches = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(() =>
            Enumerable.Range(0, 5_000).Select(_ => EventIds.NewId(now)).ToList())));
        var all = batches.SelectMany(b => b).ToList();
        Assert.Equal(all.Count, all.Distinct(StringComparer.Ordinal).Count());
    }
}
