using System.Text;
using CloudNative.CloudEvents;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.Envelope;

namespace Messaging.ConformanceTests.Cases;

public abstract partial class ConformanceSuite<TFixture>
{
    private static readonly CloudEventAttribute IntExt = CloudEventAttribute.CreateExtension("extint", CloudEventAttributeType.Integer);
    private static readonly CloudEventAttribute BoolExt = CloudEventAttribute.CreateExtension("extbool", CloudEventAttributeType.Boolean);
    private static readonly CloudEventAttribute UriExt = CloudEventAttribute.CreateExtension("exturi", CloudEventAttributeType.Uri);
    private static readonly CloudEventAttribute UriRefExt = CloudEventAttribute.CreateExtension("exturiref", CloudEventAttributeType.UriReference);
    private static readonly CloudEventAttribute TimeExt = CloudEventAttribute.CreateExtension("exttime", CloudEventAttributeType.Timestamp);
    private static readonly CloudEventAttribute BinaryExt = CloudEventAttribute.CreateExtension("extbinary", CloudEventAttributeType.Binary);
    private static readonly CloudEventAttribute StringExt = CloudEventAttribute.CreateExtension("extstring", CloudEventAttributeType.String);

    [Fact(Timeout = 60_000)]
    public Task Envelope_every_attribute_and_extension_type_round_trips() => Case(async () =>
    {
        var (topic, sub) = Names();
        var probe = new Probe();
        await using var host = await StartWithLongLeasesAsync(probe, m =>
        {
            foreach (var ext in EveryExtension)
            {
                m.AddExtensionAttribute(ext);
            }
            Subscribe(topic, sub)(m);
        });
        var sent = EventWithEveryAttribute();

        await host.Publisher.PublishAsync(topic, sent, Ct);
        await Wait.UntilAsync(() => probe.Handled.Count == 1, "the event is handled");
        var got = probe.Handled.Single().Event;

        AssertSameEvent(sent, got);
    });

    [Fact(Timeout = 60_000)]
    public Task Envelope_binary_empty_and_absent_data_round_trip() => Case(async () =>
    {
        var (topic, sub) = Names();
        var probe = new Probe();
        await using var host = await StartWithLongLeasesAsync(probe, Subscribe(topic, sub));
        var allBytes = Enumerable.Range(0, 256).Select(i => (byte)i).ToArray();
        var binary = NewEvent(data: allBytes);
        var empty = NewEvent(data: []);
        var none = NewEvent();
        none.Data = null;
        none.DataContentType = null;
        await host.Publisher.PublishBatchAsync(topic, [binary, empty, none], Ct);
        await Wait.UntilAsync(() => probe.Handled.Count == 3, "three events are handled");

        Assert.Equal(allBytes, Assert.IsType<byte[]>(probe.Handled.Single(s => s.Event.Id == binary.Id).Event.Data));
        var gotEmpty = probe.Handled.Single(s => s.Event.Id == empty.Id).Event;
        Assert.Empty(Assert.IsType<byte[]>(gotEmpty.Data));
        Assert.Equal("application/octet-stream", gotEmpty.DataContentType);
        var gotNone = probe.Handled.Single(s => s.Event.Id == none.Id).Event;
        Assert.Null(gotNone.Data);
        Assert.Null(gotNone.DataContentType);
    });

    [Fact(Timeout = 120_000)]
    public Task Envelope_large_payload_up_to_the_limit_and_clear_error_above() => Case(async () =>
    {
        var (topic, sub) = Names();
        var probe = new Probe();
        await using var host = await StartWithLongLeasesAsync(probe, Subscribe(topic, sub));
        var limit = host.Transport.Capabilities.MaxEventSizeBytes;
        // Attributes take a few hundred bytes; leave 4 KiB of headroom for them.
        var large = new byte[limit - 4096];
        Random.Shared.NextBytes(large);
        var fits = NewEvent(data: large);
        await host.Publisher.PublishAsync(topic, fits, Ct);
        await Wait.UntilAsync(() => probe.Handled.Count == 1, "the large event is handled");
        Assert.Equal(large, (byte[])probe.Handled.Single().Event.Data!);

        var tooLarge = NewEvent(data: new byte[limit + 1]);
        var error = await Assert.ThrowsAsync<EventTooLargeException>(() => host.Publisher.PublishAsync(topic, tooLarge, Ct));
        Assert.Equal(limit, error.LimitBytes);
        Assert.True(error.SizeBytes > limit);
        Assert.Contains(tooLarge.Id!, error.Message, StringComparison.Ordinal);
    });

    [Fact(Timeout = 60_000)]
    public Task Envelope_structured_mode_message_from_another_producer_is_accepted() => Case(async () =>
    {
        var (topic, sub) = Names();
        var probe = new Probe();
        await using var host = await StartWithLongLeasesAsync(probe, Subscribe(topic, sub));
        var id = Guid.NewGuid().ToString();
        var json = $$$"""{"specversion":"1.0","id":"{{{id}}}","source":"urn:foreign","type":"com.example.foreign","subject":"s","datacontenttype":"application/json","data":{"a":[1,2,3]}}""";
        await Fixture.PublishRawAsync(topic, new Dictionary<string, string>(), Encoding.UTF8.GetBytes(json), "application/cloudevents+json; charset=utf-8", Ct);
        await Wait.UntilAsync(() => probe.Handled.Count == 1, "the structured event is handled");
        var got = probe.Handled.Single().Event;
        Assert.Equal(id, got.Id);
        Assert.Equal("com.example.foreign", got.Type);
        Assert.Equal("s", got.Subject);
        Assert.Equal("""{"a":[1,2,3]}""", Encoding.UTF8.GetString((byte[])got.Data!));
    });

    [Fact(Timeout = 60_000)]
    public Task Envelope_binary_mode_message_from_another_producer_is_accepted() => Case(async () =>
    {
        var (topic, sub) = Names();
        var probe = new Probe();
        await using var host = await StartWithLongLeasesAsync(probe, Subscribe(topic, sub));
        var id = Guid.NewGuid().ToString();
        var headers = new Dictionary<string, string>
        {
            [Fixture.BinaryAttributeName("specversion")] = "1.0",
            [Fixture.BinaryAttributeName("id")] = id,
            [Fixture.BinaryAttributeName("source")] = "urn:foreign",
            [Fixture.BinaryAttributeName("type")] = "com.example.foreign",
            [Fixture.BinaryAttributeName("customext")] = "value",
        };
        await Fixture.PublishRawAsync(topic, headers, Encoding.UTF8.GetBytes("plain text"), "text/plain", Ct);
        await Wait.UntilAsync(() => probe.Handled.Count == 1, "the binary-mode event is handled");
        var got = probe.Handled.Single().Event;
        Assert.Equal(id, got.Id);
        Assert.Equal("text/plain", got.DataContentType);
        Assert.Equal("value", got["customext"]);
        Assert.Equal("plain text", Encoding.UTF8.GetString((byte[])got.Data!));
    });

    /// <summary>The extension attributes of <see cref="EventWithEveryAttribute"/>, one of each type.</summary>
    private static CloudEventAttribute[] EveryExtension => [IntExt, BoolExt, UriExt, UriRefExt, TimeExt, BinaryExt, StringExt];

    /// <summary>An event with every context attribute, non-ASCII text and one extension of each type.</summary>
    private static CloudEvent EventWithEveryAttribute()
    {
        var sent = new CloudEvent(CloudEventsSpecVersion.V1_0, EveryExtension)
        {
            Id = "id-ünïcødé-" + Guid.NewGuid(),
            Source = new Uri("https://example.com/orders/42?x=1"),
            Type = "com.example.order.placed.v1",
            Subject = "orders/42 — ☃ subject",
            Time = new DateTimeOffset(2026, 11, 27, 10, 11, 12, 345, TimeSpan.Zero),
            DataContentType = "application/json; charset=utf-8",
            DataSchema = new Uri("https://example.com/schemas/order.json"),
            Data = Encoding.UTF8.GetBytes("{\"text\":\"héllo wörld ✓ 𝄞\",\"n\":42}"),
        };
        sent[IntExt] = -2147483648;
        sent[BoolExt] = true;
        sent[UriExt] = new Uri("https://example.com/a b");
        sent[UriRefExt] = new Uri("/relative/ref", UriKind.Relative);
        sent[TimeExt] = new DateTimeOffset(2001, 2, 3, 4, 5, 6, TimeSpan.FromHours(2));
        sent[BinaryExt] = new byte[] { 0, 1, 2, 254, 255 };
        sent[StringExt] = "ünïcødé ✓ \"quoted\"";
        return sent;
    }

    /// <summary>Every attribute, extension type and data byte of <paramref name="sent"/> arrived; nothing was added but the trace context.</summary>
    private static void AssertSameEvent(CloudEvent sent, CloudEvent got)
    {
        Assert.Equal(sent.Id, got.Id);
        Assert.Equal(sent.Source, got.Source);
        Assert.Equal(sent.Type, got.Type);
        Assert.Equal(sent.SpecVersion, got.SpecVersion);
        Assert.Equal(sent.Subject, got.Subject);
        Assert.Equal(sent.Time, got.Time);
        Assert.Equal(sent.DataContentType, got.DataContentType);
        Assert.Equal(sent.DataSchema, got.DataSchema);
        Assert.Equal((byte[])sent.Data!, Assert.IsType<byte[]>(got.Data));
        Assert.Equal(-2147483648, got[IntExt]);
        Assert.Equal(true, got[BoolExt]);
        Assert.Equal(sent[UriExt], got[UriExt]);
        Assert.Equal(sent[UriRefExt], got[UriRefExt]);
        Assert.Equal(sent[TimeExt], got[TimeExt]);
        Assert.Equal((byte[])sent[BinaryExt]!, (byte[])got[BinaryExt]!);
        Assert.Equal(sent[StringExt], got[StringExt]);
        // Nothing added but the trace context the library itself carries.
        var extra = got.GetPopulatedAttributes().Select(a => a.Key.Name)
            .Except(sent.GetPopulatedAttributes().Select(a => a.Key.Name))
            .Except(["traceparent", "tracestate"]);
        Assert.Empty(extra);
    }
}
