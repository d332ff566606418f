using System.Text;
using Azure.Messaging.ServiceBus;
using CloudNative.CloudEvents;
using Messaging.Envelope;
using Messaging.ServiceBus;
using Microsoft.Extensions.Options;

namespace Messaging.ConformanceTests.ServiceBus;

/// <summary>
/// The documented Service Bus wire mapping (CloudEvents AMQP 1.0 binding), checked on the SDK's own message types, and
/// the pieces of the retry design that live in message properties.
/// </summary>
public sealed class ServiceBusMappingTests
{
    private static CloudEvent Sample() => new()
    {
        Id = "map-1",
        Source = new Uri("urn:map"),
        Type = "com.example.mapped",
        Subject = "subj",
        Time = new DateTimeOffset(2026, 11, 27, 10, 11, 12, 345, TimeSpan.Zero).AddTicks(6789),
        DataContentType = "text/plain",
        Data = Encoding.UTF8.GetBytes("hello"),
    };

    private static ServiceBusCloudEventCodec Codec(ContentMode mode = ContentMode.Binary, long limit = 262_144, bool copySubject = true,
        params CloudEventAttribute[] extensions) => new(mode, extensions, limit, copySubject);

    /// <summary>What a receiver gets for a sent message: the same body, properties and header fields.</summary>
    private static ServiceBusReceivedMessage Received(ServiceBusMessage sent, int deliveryCount = 1) =>
        ServiceBusModelFactory.ServiceBusReceivedMessage(
            body: sent.Body,
            messageId: sent.MessageId,
            subject: sent.Subject,
            contentType: sent.ContentType,
            properties: new Dictionary<string, object>(sent.ApplicationProperties),
            deliveryCount: deliveryCount);

    [Fact]
    public void Binary_mode_uses_cloudEvents_prefixed_application_properties_and_the_content_type()
    {
        var message = Codec().Encode(Sample());
        Assert.Equal("1.0", message.ApplicationProperties["cloudEvents_specversion"]);
        Assert.Equal("map-1", message.ApplicationProperties["cloudEvents_id"]);
        Assert.Equal("urn:map", message.ApplicationProperties["cloudEvents_source"]);
        Assert.Equal("com.example.mapped", message.ApplicationProperties["cloudEvents_type"]);
        Assert.Equal("subj", message.ApplicationProperties["cloudEvents_subject"]);
        Assert.Equal("2026-11-27T10:11:12.3456789Z", message.ApplicationProperties["cloudEvents_time"]);
        Assert.False(message.ApplicationProperties.ContainsKey("cloudEvents_datacontenttype"));
        Assert.Equal("text/plain", message.ContentType);
        Assert.Equal("map-1", message.MessageId);
        Assert.Equal("subj", message.Subject);
        Assert.Equal("hello", message.Body.ToString());
    }

    [Fact]
    public void Structured_mode_puts_the_whole_event_in_the_body()
    {
        var message = Codec(ContentMode.Structured).Encode(Sample());
        Assert.Equal("application/cloudevents+json; charset=utf-8", message.ContentType);
        Assert.Empty(message.ApplicationProperties);
        Assert.Equal("map-1", message.MessageId);
        using var json = System.Text.Json.JsonDocument.Parse(message.Body.ToMemory());
        Assert.Equal("map-1", json.RootElement.GetProperty("id").GetString());
        Assert.Equal("text/plain", json.RootElement.GetProperty("datacontenttype").GetString());
        var back = Codec().Decode(Received(message));
        Assert.Equal("hello", Encoding.UTF8.GetString((byte[])back.Data!));
        Assert.Equal(Sample().Time, back.Time);
    }

    [Theory]
    [InlineData(ContentMode.Binary)]
    [InlineData(ContentMode.Structured)]
    public void Every_attribute_round_trips_exactly(ContentMode mode)
    {
        var ext = CloudEventAttribute.CreateExtension("extint", CloudEventAttributeType.Integer);
        var sent = Sample();
        sent.DataSchema = new Uri("https://example.com/schema");
        sent["customext"] = "ünïcødé";
        var codec = Codec(mode, extensions: ext);
        var typed = new CloudEvent(CloudEventsSpecVersion.V1_0, [ext]) { Id = sent.Id, Source = sent.Source, Type = sent.Type, Time = sent.Time };
        typed[ext] = 42;
        foreach (var original in new[] { sent, typed })
        {
            var back = codec.Decode(Received(codec.Encode(original)));
            Assert.Equal(
                original.GetPopulatedAttributes().Select(a => (a.Key.Name, a.Key.Format(a.Value))).OrderBy(a => a.Name),
                back.GetPopulatedAttributes().Select(a => (a.Key.Name, a.Key.Format(a.Value))).OrderBy(a => a.Name));
            Assert.Equal(original.Data is null ? [] : (byte[])original.Data, back.Data is null ? [] : (byte[])back.Data);
        }
    }

    [Fact]
    public void Other_producers_prefixes_and_native_AMQP_property_types_are_accepted()
    {
        var binaryExt = CloudEventAttribute.CreateExtension("extbinary", CloudEventAttributeType.Binary);
        var intExt = CloudEventAttribute.CreateExtension("extint", CloudEventAttributeType.Integer);
        var boolExt = CloudEventAttribute.CreateExtension("extbool", CloudEventAttributeType.Boolean);
        var received = ServiceBusModelFactory.ServiceBusReceivedMessage(
            body: BinaryData.FromString("{}"),
            properties: new Dictionary<string, object>
            {
                ["cloudEvents:specversion"] = "1.0",
                ["cloudEvents:id"] = "foreign-1",
                ["cloudEvents:source"] = "urn:foreign",
                ["ce_type"] = "com.example.foreign",
                ["cloudEvents:time"] = new DateTime(2026, 1, 2, 3, 4, 5, 678, DateTimeKind.Utc),
                ["cloudEvents:extbinary"] = new byte[] { 0, 1, 255 },
                ["cloudEvents:extint"] = 7L,
                ["cloudEvents:extbool"] = true,
                ["cloudEvents:datacontenttype"] = "application/json",
                ["unrelated"] = "ignored",
            });
        var cloudEvent = Codec(extensions: [binaryExt, intExt, boolExt]).Decode(received);
        Assert.Equal("foreign-1", cloudEvent.Id);
        Assert.Equal("com.example.foreign", cloudEvent.Type);
        Assert.Equal(new DateTimeOffset(2026, 1, 2, 3, 4, 5, 678, TimeSpan.Zero), cloudEvent.Time);
        Assert.Equal(new byte[] { 0, 1, 255 }, (byte[])cloudEvent[binaryExt]!);
        Assert.Equal(7, cloudEvent[intExt]);
        Assert.Equal(true, cloudEvent[boolExt]);
        Assert.Equal("application/json", cloudEvent.DataContentType);
        Assert.Null(cloudEvent["unrelated"]);
    }

    [Fact]
    public void A_message_without_CloudEvents_attributes_is_refused_with_a_reason()
    {
        var received = ServiceBusModelFactory.ServiceBusReceivedMessage(body: BinaryData.FromString("plain"), contentType: "text/plain");
        var error = Assert.Throws<InvalidCloudEventException>(() => Codec().Decode(received));
        Assert.Contains("cloudEvents_", error.Message, StringComparison.Ordinal);
        var missingSource = ServiceBusModelFactory.ServiceBusReceivedMessage(body: BinaryData.FromString("x"), properties: new Dictionary<string, object>
        {
            ["cloudEvents_specversion"] = "1.0",
            ["cloudEvents_id"] = "x",
            ["cloudEvents_type"] = "t",
        });
        Assert.Contains("source", Assert.Throws<InvalidCloudEventException>(() => Codec().Decode(missingSource)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_event_above_the_limit_is_refused_before_sending()
    {
        var big = Sample();
        big.Data = new byte[2000];
        var error = Assert.Throws<EventTooLargeException>(() => Codec(limit: 1024).Encode(big));
        Assert.Equal(1024, error.LimitBytes);
        Assert.True(error.SizeBytes > 2000);
        Assert.Contains("map-1", error.Message, StringComparison.Ordinal);
        Assert.Equal(ServiceBusTransportOptions.StandardTierMaxMessageBytes, new ServiceBusTransportOptions().MaxEventSizeBytes);
    }

    [Fact]
    public void Ids_longer_than_a_MessageId_allows_stay_in_the_attribute_only_and_subject_copy_is_optional()
    {
        var cloudEvent = Sample();
        cloudEvent.Id = new string('x', 129);
        var message = Codec(copySubject: false).Encode(cloudEvent);
        Assert.Null(message.MessageId);
        Assert.Null(message.Subject);
        Assert.Equal(cloudEvent.Id, message.ApplicationProperties["cloudEvents_id"]);
    }

    [Fact]
    public void The_attempt_is_the_brokers_delivery_count_plus_the_attempts_carried_by_a_retry_copy()
    {
        var message = Codec().Encode(Sample());
        Assert.Equal(1, ServiceBusMessageCopy.AttemptOf(Received(message)));
        Assert.Equal(3, ServiceBusMessageCopy.AttemptOf(Received(message, deliveryCount: 3)));
        message.ApplicationProperties[ServiceBusNames.PriorAttemptsProperty] = 4;
        Assert.Equal(5, ServiceBusMessageCopy.AttemptOf(Received(message)));
        Assert.Equal(6, ServiceBusMessageCopy.AttemptOf(Received(message, deliveryCount: 2)));
    }

    [Fact]
    public void A_copy_keeps_the_event_and_drops_dead_letter_bookkeeping()
    {
        var message = Codec().Encode(Sample());
        message.ApplicationProperties["deadletter-reason"] = "Rejected";
        message.ApplicationProperties["DeadLetterReason"] = "Rejected";
        message.ApplicationProperties[ServiceBusNames.PriorAttemptsProperty] = 2;
        var copy = ServiceBusMessageCopy.Copy(Received(message), key => key.StartsWith("deadletter-", StringComparison.Ordinal) || key.StartsWith("messaging-", StringComparison.Ordinal));
        Assert.Equal("map-1", copy.MessageId);
        Assert.Equal("text/plain", copy.ContentType);
        Assert.Equal("hello", copy.Body.ToString());
        Assert.Equal("map-1", copy.ApplicationProperties["cloudEvents_id"]);
        Assert.False(copy.ApplicationProperties.ContainsKey("deadletter-reason"));
        Assert.False(copy.ApplicationProperties.ContainsKey("DeadLetterReason"));
        Assert.False(copy.ApplicationProperties.ContainsKey(ServiceBusNames.PriorAttemptsProperty));
    }

    [Fact]
    public void Options_are_validated_with_messages_that_name_the_setting()
    {
        var validator = new ServiceBusOptionsValidator();
        Assert.True(validator.Validate(null, new ServiceBusTransportOptions
        {
            ConnectionString = "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
        }).Succeeded);
        Assert.True(validator.Validate(null, new ServiceBusTransportOptions { FullyQualifiedNamespace = "ns.servicebus.windows.net" }).Succeeded);

        var neither = validator.Validate(null, new ServiceBusTransportOptions());
        Assert.Contains("Messaging:ServiceBus:ConnectionString", neither.FailureMessage, StringComparison.Ordinal);
        var broken = validator.Validate(null, new ServiceBusTransportOptions
        {
            ConnectionString = "Endpoint=sb://ns/;SharedAccessKeyName=k",
            MaxEventSizeBytes = 200 * 1024 * 1024,
            LockDuration = TimeSpan.FromSeconds(1),
            MaxDeliveryCount = 0,
        });
        Assert.Contains("Messaging:ServiceBus:ConnectionString has neither", broken.FailureMessage, StringComparison.Ordinal);
        Assert.Contains("Messaging:ServiceBus:MaxEventSizeBytes", broken.FailureMessage, StringComparison.Ordinal);
        Assert.Contains("Messaging:ServiceBus:LockDuration", broken.FailureMessage, StringComparison.Ordinal);
        Assert.Contains("Messaging:ServiceBus:MaxDeliveryCount", broken.FailureMessage, StringComparison.Ordinal);
        Assert.DoesNotContain("SharedAccessKey=", broken.FailureMessage, StringComparison.Ordinal);
        var url = validator.Validate(null, new ServiceBusTransportOptions { FullyQualifiedNamespace = "sb://ns.servicebus.windows.net/" });
        Assert.Contains("Messaging:ServiceBus:FullyQualifiedNamespace", url.FailureMessage, StringComparison.Ordinal);
    }

    [Fact]
    public void Subscription_names_beyond_the_Service_Bus_limit_are_refused_clearly()
    {
        var error = Assert.Throws<ArgumentException>(() => ServiceBusNames.EnsureValidSubscription(new string('s', 51)));
        Assert.Contains("at most 50", error.Message, StringComparison.Ordinal);
        Assert.Equal("orders-billing.redelivery", ServiceBusNames.RedeliveryQueue("orders-billing"));
    }

    [Fact]
    public void Dead_letter_metadata_reads_back_from_our_properties_or_falls_back_to_the_brokers_reason()
    {
        var time = new DateTimeOffset(2026, 11, 27, 12, 0, 0, TimeSpan.Zero);
        var sent = Codec().Encode(Sample());
        var ours = new Dictionary<string, object>(sent.ApplicationProperties)
        {
            ["DeadLetterReason"] = "MaxAttemptsExceeded",
            ["DeadLetterErrorDescription"] = "The handler failed on all 3 attempt(s).",
        };
        foreach (var (key, value) in new Messaging.DeadLetters.DeadLetterMetadata
        {
            Reason = Messaging.DeadLetters.DeadLetterReason.MaxAttemptsExceeded,
            Description = "The handler failed on all 3 attempt(s).",
            ExceptionType = "System.InvalidOperationException",
            ExceptionMessage = "boom",
            AttemptCount = 3,
            SourceSubscription = "billing",
            Time = time,
        }.ToProperties())
        {
            ours[key] = value;
        }
        var letter = ServiceBusDeadLetterStore.Describe(
            ServiceBusModelFactory.ServiceBusReceivedMessage(body: sent.Body, contentType: sent.ContentType, properties: ours, sequenceNumber: 42), 's', "billing", Codec());
        Assert.Equal("s:42", letter.DeadLetterId);
        Assert.Equal("map-1", letter.Event!.Id);
        Assert.Equal(Messaging.DeadLetters.DeadLetterReason.MaxAttemptsExceeded, letter.Metadata.Reason);
        Assert.Equal(3, letter.Metadata.AttemptCount);
        Assert.Equal("boom", letter.Metadata.ExceptionMessage);
        Assert.Equal(time, letter.Metadata.Time);

        var moved = new Dictionary<string, object>(sent.ApplicationProperties)
        {
            ["DeadLetterReason"] = ServiceBusNames.BrokerDeliveryLimitReason,
            ["DeadLetterErrorDescription"] = "Message could not be consumed after 10 delivery attempts.",
            [ServiceBusNames.PriorAttemptsProperty] = 2,
        };
        var byBroker = ServiceBusDeadLetterStore.Describe(
            ServiceBusModelFactory.ServiceBusReceivedMessage(body: sent.Body, contentType: sent.ContentType, properties: moved, deliveryCount: 10, sequenceNumber: 7), 'r', "billing", Codec());
        Assert.Equal("r:7", byBroker.DeadLetterId);
        Assert.Equal(Messaging.DeadLetters.DeadLetterReason.DeliveryLimitExceeded, byBroker.Metadata.Reason);
        Assert.Equal(12, byBroker.Metadata.AttemptCount);
        Assert.Equal("billing", byBroker.Metadata.SourceSubscription);
        Assert.Contains("10 delivery attempts", byBroker.Metadata.Description, StringComparison.Ordinal);

        var notAnEvent = ServiceBusDeadLetterStore.Describe(
            ServiceBusModelFactory.ServiceBusReceivedMessage(body: BinaryData.FromString("just bytes"), properties: new Dictionary<string, object>()), 's', "billing", Codec());
        Assert.Null(notAnEvent.Event);
        Assert.Equal("just bytes", System.Text.Encoding.UTF8.GetString(notAnEvent.Body.Span));
        Assert.Equal(Messaging.DeadLetters.DeadLetterReason.Unknown, notAnEvent.Metadata.Reason);
    }
}
