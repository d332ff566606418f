using System.Text;
using CloudNative.CloudEvents;
using Messaging.Aws;
using Messaging.Envelope;

namespace Messaging.ConformanceTests.Aws;

/// <summary>The documented SNS/SQS mapping of CloudEvents, checked on the encoded message.</summary>
public sealed class SnsSqsCodecTests
{
    private static readonly CloudEventAttribute Tenant = CloudEventAttribute.CreateExtension("tenant", CloudEventAttributeType.String);

    private static CloudEvent Sample() => new()
    {
        Id = "map-1",
        Source = new Uri("urn:map"),
        Type = "com.example.mapped",
        Subject = "subj",
        DataContentType = "text/plain",
        Data = Encoding.UTF8.GetBytes("hello ✓"),
    };

    private static string Attribute(SqsWireMessage message, string name) => Assert.Single(message.Attributes, a => a.Key == name).Value;

    [Fact]
    public void Text_event_with_few_attributes_uses_binary_mode_with_ce_prefixed_attributes()
    {
        var message = new SnsSqsCodec([]).Encode(Sample());
        Assert.Equal("hello ✓", message.Body);
        Assert.Equal("1.0", Attribute(message, "ce_specversion"));
        Assert.Equal("map-1", Attribute(message, "ce_id"));
        Assert.Equal("urn:map", Attribute(message, "ce_source"));
        Assert.Equal("com.example.mapped", Attribute(message, "ce_type"));
        Assert.Equal("subj", Attribute(message, "ce_subject"));
        Assert.Equal("text/plain", Attribute(message, "content-type"));
        Assert.DoesNotContain(message.Attributes, a => a.Key == "ce_datacontenttype");
        Assert.Equal(6, message.Attributes.Count);
    }

    [Fact]
    public void More_than_nine_attributes_overflow_into_structured_mode_with_one_attribute()
    {
        var extensions = Enumerable.Range(0, 6).Select(i => CloudEventAttribute.CreateExtension($"ext{i}", CloudEventAttributeType.String)).ToList();
        var cloudEvent = new CloudEvent(CloudEventsSpecVersion.V1_0, extensions)
        {
            Id = "many", Source = new Uri("urn:map"), Type = "t", DataContentType = "text/plain", Data = Encoding.UTF8.GetBytes("x"),
        };
        foreach (var ext in extensions)
        {
            cloudEvent[ext] = "v-" + ext.Name;
        }
        var message = new SnsSqsCodec(extensions).Encode(cloudEvent);
        Assert.Equal([new KeyValuePair<string, string>("content-type", "application/cloudevents+json; charset=utf-8")], message.Attributes);
        var decoded = new SnsSqsCodec(extensions).Decode(message.Body, message.Attributes);
        Assert.Equal("v-ext5", decoded[extensions[5]]);
        Assert.Equal("x", Encoding.UTF8.GetString((byte[])decoded.Data!));
    }

    [Fact]
    public void Nine_attributes_still_use_binary_mode_leaving_one_for_dead_letter_metadata()
    {
        var extensions = Enumerable.Range(0, 3).Select(i => CloudEventAttribute.CreateExtension($"ext{i}", CloudEventAttributeType.String)).ToList();
        var cloudEvent = new CloudEvent(CloudEventsSpecVersion.V1_0, extensions)
        {
            Id = "nine", Source = new Uri("urn:map"), Type = "t", Subject = "s", DataContentType = "text/plain", Data = Encoding.UTF8.GetBytes("x"),
        };
        foreach (var ext in extensions)
        {
            cloudEvent[ext] = "v";
        }
        var message = new SnsSqsCodec(extensions).Encode(cloudEvent);
        Assert.Equal(SnsSqsCodec.MaxBinaryModeAttributes, message.Attributes.Count);
        Assert.Equal("x", message.Body);
    }

    [Theory]
    [InlineData(new byte[] { 0, 1, 2, 254, 255 })] // not UTF-8
    [InlineData(new byte[] { 0x41, 0x01, 0x42 })]   // UTF-8, but U+0001 is not allowed in SQS bodies
    [InlineData(new byte[0])]                        // SNS refuses empty messages
    public void Data_sqs_cannot_carry_as_text_uses_structured_mode_and_round_trips(byte[] data)
    {
        var cloudEvent = Sample();
        cloudEvent.DataContentType = "application/octet-stream";
        cloudEvent.Data = data;
        var codec = new SnsSqsCodec([]);
        var message = codec.Encode(cloudEvent);
        Assert.StartsWith("application/cloudevents+json", Attribute(message, "content-type"), StringComparison.Ordinal);
        Assert.True(SnsSqsCodec.IsSqsText(message.Body));
        var decoded = codec.Decode(message.Body, message.Attributes);
        Assert.Equal(data, Assert.IsType<byte[]>(decoded.Data));
        Assert.Equal("application/octet-stream", decoded.DataContentType);
    }

    [Fact]
    public void Absent_data_round_trips_as_absent()
    {
        var cloudEvent = Sample();
        cloudEvent.Data = null;
        cloudEvent.DataContentType = null;
        var codec = new SnsSqsCodec([]);
        var message = codec.Encode(cloudEvent);
        Assert.NotEmpty(message.Body);
        var decoded = codec.Decode(message.Body, message.Attributes);
        Assert.Null(decoded.Data);
        Assert.Null(decoded.DataContentType);
    }

    [Fact]
    public void An_event_above_the_limit_is_refused_before_sending_with_the_limit_in_the_error()
    {
        var codec = new SnsSqsCodec([], 4096);
        var cloudEvent = Sample();
        cloudEvent.Data = new byte[4097];
        var error = Assert.Throws<EventTooLargeException>(() => codec.Encode(cloudEvent));
        Assert.Equal(4096, error.LimitBytes);
        Assert.True(error.SizeBytes > 4096);
        Assert.Contains("map-1", error.Message, StringComparison.Ordinal);
        Assert.Contains(SnsSqsTransport.TransportName, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Binary_data_at_the_default_limit_still_fits_in_256_KiB_once_base64_encoded()
    {
        var cloudEvent = Sample();
        cloudEvent.DataContentType = "application/octet-stream";
        cloudEvent.Data = Enumerable.Range(0, SnsSqsCodec.DefaultMaxEventSizeBytes - 4096).Select(i => (byte)(i * 7)).ToArray();
        var message = new SnsSqsCodec([]).Encode(cloudEvent);
        Assert.InRange(message.WireSize, SnsSqsCodec.DefaultMaxEventSizeBytes, SnsSqsCodec.MaxWireBytes);
    }

    [Fact]
    public void An_event_within_the_limit_whose_encoding_exceeds_256_KiB_is_refused_with_the_wire_limit()
    {
        var codec = new SnsSqsCodec([], SnsSqsCodec.MaxWireBytes);
        var cloudEvent = Sample();
        cloudEvent.DataContentType = "application/octet-stream";
        cloudEvent.Data = new byte[250_000]; // zeros: not SQS text, so base64 in structured mode
        var error = Assert.Throws<EventTooLargeException>(() => codec.Encode(cloudEvent));
        Assert.Equal(SnsSqsCodec.MaxWireBytes, error.LimitBytes);
    }

    [Theory]
    [InlineData("ce_")]
    [InlineData("ce-")]
    [InlineData("cloudEvents_")]
    [InlineData("cloudEvents:")]
    public void Binary_mode_from_other_producers_is_accepted_with_every_common_prefix(string prefix)
    {
        var decoded = new SnsSqsCodec([Tenant]).Decode("plain text",
        [
            new(prefix + "specversion", "1.0"), new(prefix + "id", "f-1"), new(prefix + "source", "urn:foreign"),
            new(prefix + "type", "com.example.foreign"), new(prefix + "tenant", "acme"), new("content-type", "text/plain"),
            new("unrelated", "ignored"),
        ]);
        Assert.Equal("f-1", decoded.Id);
        Assert.Equal("acme", decoded[Tenant]);
        Assert.Equal("text/plain", decoded.DataContentType);
        Assert.Equal("plain text", Encoding.UTF8.GetString((byte[])decoded.Data!));
    }

    [Fact]
    public void Structured_json_without_any_attribute_is_accepted()
    {
        var decoded = new SnsSqsCodec([]).Decode("""{"specversion":"1.0","id":"s-1","source":"urn:x","type":"t","data":{"a":1}}""", []);
        Assert.Equal("s-1", decoded.Id);
        Assert.Equal("""{"a":1}""", Encoding.UTF8.GetString((byte[])decoded.Data!));
    }

    [Fact]
    public void An_SNS_notification_envelope_is_unwrapped_when_raw_delivery_is_off()
    {
        var envelope = """
            {"Type":"Notification","MessageId":"m","TopicArn":"arn:aws:sns:us-east-1:000000000000:t","Message":"hi there",
             "Timestamp":"2026-11-27T10:00:00.000Z","SignatureVersion":"1",
             "MessageAttributes":{"ce_specversion":{"Type":"String","Value":"1.0"},"ce_id":{"Type":"String","Value":"env-1"},
               "ce_source":{"Type":"String","Value":"urn:env"},"ce_type":{"Type":"String","Value":"t"},"content-type":{"Type":"String","Value":"text/plain"}}}
            """;
        var decoded = new SnsSqsCodec([]).Decode(envelope, []);
        Assert.Equal("env-1", decoded.Id);
        Assert.Equal("hi there", Encoding.UTF8.GetString((byte[])decoded.Data!));
        Assert.Equal("text/plain", decoded.DataContentType);
    }

    [Theory]
    [InlineData("just some bytes")]
    [InlineData("{\"specversion\":\"1.0\",\"id\":")]
    [InlineData("{\"hello\":\"world\"}")]
    public void A_message_that_is_no_CloudEvent_is_refused_with_a_reason(string body)
    {
        var error = Assert.Throws<InvalidCloudEventException>(() => new SnsSqsCodec([]).Decode(body, []));
        Assert.Contains("CloudEvents", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Binary_mode_missing_source_names_the_missing_attribute()
    {
        var error = Assert.Throws<InvalidCloudEventException>(() => new SnsSqsCodec([]).Decode("x",
            [new("ce_specversion", "1.0"), new("ce_id", "no-source"), new("ce_type", "t")]));
        Assert.Contains("source", error.Message, StringComparison.Ordinal);
    }
}
