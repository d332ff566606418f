using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using Messaging.ConformanceTests.Infrastructure;
using Messaging.DeadLetters;
using Microsoft.Extensions.Logging;
using static Messaging.ConformanceTests.Cases.PoisonCorpus.Outcome;

namespace Messaging.ConformanceTests.Cases;

// The poison corpus: raw messages a foreign or broken producer sends, injected with the broker's own client
// (ITransportFixture.PublishRawAsync with typed header values), each group followed by 100 good events on a subscription
// with Concurrency = 1 and Prefetch = 1, so one message that stalls or kills the consumer stops everything behind it.
//
// Every input has ONE expected outcome, the same on every transport (PoisonCorpus.Decisions is the source of truth and
// the ledger prints it):
//   handled         the CloudEvents spec allows the value: the handler sees the event once, as documented;
//   InvalidMessage  dead-lettered exactly once with DeadLetterReason.InvalidMessage, body byte for byte, attempt 1, never
//                   seen by a handler, one Warning naming the message; the consumer goes on.
//
// | group | input | expected |
// |---|---|---|
// | control characters | cc-content-type-crlf: binary mode, content type `application/json\r\n` | InvalidMessage |
// | control characters | cc-subject-crlf: `subject` header with CR LF | InvalidMessage |
// | control characters | cc-type-crlf: `type` header with CR LF | InvalidMessage |
// | control characters | cc-subject-nul: `subject` header with U+0000 (SNS/SQS refuse it at send: not carried) | InvalidMessage |
// | control characters | cc-structured-subject-crlf: structured, `"subject":"...\r\n..."` | InvalidMessage |
// | control characters | cc-structured-content-type-crlf: valid structured body, content type `application/cloudevents+json\r\n` | InvalidMessage |
// | invalid UTF-8 | utf8-id-header: `id` header bytes not UTF-8 (RabbitMQ long string only) | InvalidMessage |
// | invalid UTF-8 | utf8-subject-header: `subject` header bytes not UTF-8 (RabbitMQ only) | InvalidMessage |
// | invalid UTF-8 | utf8-structured-attribute: structured body, invalid UTF-8 inside `subject` (not SNS/SQS: text bodies) | InvalidMessage |
// | invalid UTF-8 | utf8-structured-data: structured body, invalid UTF-8 inside `data` (not SNS/SQS) | InvalidMessage |
// | invalid UTF-8 | utf8-structured-lone-surrogate: structured, `"subject":"a\ud800b"` (escaped, so every wire carries it) | InvalidMessage |
// | invalid UTF-8 | utf8-binary-data: binary mode, `application/octet-stream` data with invalid UTF-8 (not SNS/SQS) | handled |
// | required attributes | specversion-0.1, specversion-2.0, specversion-absent (binary), specversion-absent-structured | InvalidMessage |
// | required attributes | id-missing, id-empty (structured on SNS/SQS, which refuse empty attributes), source-missing, type-missing | InvalidMessage |
// | required attributes | source-not-uri-reference: `http://[::1` (CloudNative.CloudEvents accepts `::not a uri::`, so it is not used) | InvalidMessage |
// | required attributes | time-not-rfc3339 (`yesterday`), time-without-offset (`2026-01-02T03:04:05`) | InvalidMessage |
// | header wire types | wt-id-binary, wt-ext-binary: bytes (AMQP 0-9-1 byte array, AMQP binary, SQS Binary) | handled, as BinaryAttributeText |
// | header wire types | wt-id-utf8-text: `id` as a long string given as bytes (what RabbitMQ.Client sends for byte[]) | handled |
// | header wire types | wt-ext-int, wt-ext-long, wt-ext-bool: an extension as integer / long / boolean | handled, invariant text |
// | header wire types | wt-time-timestamp: `time` as the wire's timestamp (whole seconds) | handled, same instant |
// | header wire types | wt-ext-table, wt-ext-list: an extension as a nested table / array (RabbitMQ only) | InvalidMessage |
// | header wire types | wt-foreign-{binary,int,long,bool,timestamp,table,list}: a non-CloudEvents header of each type | handled, header ignored |
// | oversized attributes | big-500-extensions (structured where the wire has fewer attributes: Pub/Sub 100, SQS 10) | handled, all 500 |
// | oversized attributes | big-64k-value: one 64 KiB extension (structured on Pub/Sub: 1 KiB values; Service Bus: 64 KB header) | handled |
// | structured bodies | sb-array, sb-null, sb-deep-1000 (`data` nested 1,000 deep), sb-truncated | InvalidMessage |
// | structured bodies | sb-data-base64-not-base64, sb-data-and-data-base64 | InvalidMessage |
// | structured bodies | sb-valid-data-base64: a valid structured event (control) | handled |
// | prior attempts | pa-negative (-5), pa-int-max, pa-long-max in the transport's prior-attempts header (a foreign header elsewhere) | handled, attempt >= 1 (negative: 1) |
//
// A transport whose wire cannot physically carry an input (PublishRawAsync's CannotCarry says why) skips that input,
// or sends its structured-mode twin where the table says so; the case still runs and asserts on the rest.

/// <summary>The poison corpus's decisions: one expected outcome per input, the same on every transport.</summary>
public static class PoisonCorpus
{
    public enum Outcome
    {
        /// <summary>The CloudEvents spec allows it: the handler sees the event once.</summary>
        Handled,

        /// <summary>Dead-lettered exactly once with <see cref="DeadLetterReason.InvalidMessage"/>; no handler sees it.</summary>
        InvalidMessage,
    }

    public sealed record Decision(string Group, string Input, string What, Outcome Expected, string Why);

    private const string Cc = "control characters";
    private const string Utf8 = "invalid UTF-8";
    private const string Required = "required attributes";
    private const string Wire = "header wire types";
    private const string Big = "oversized attributes";
    private const string Bodies = "structured bodies";
    private const string Prior = "prior attempts";

    private const string NoControl = "CloudEvents String values must not contain control characters (U+0000-U+001F, U+007F-U+009F)";
    private const string NotUtf8 = "an attribute is a sequence of Unicode characters; bytes that are not UTF-8 are no string (decoding them lossily would forge another value)";
    private const string NotJson = "JSON text is UTF-8 (RFC 8259 8.1): the body is not a JSON CloudEvent";
    private const string Ignored = "not a CloudEvents attribute: foreign headers are ignored, whatever their wire type";

    public static IReadOnlyList<Decision> Decisions { get; } =
    [
        new(Cc, "cc-content-type-crlf", "binary mode, content type `application/json\\r\\n`", InvalidMessage, "datacontenttype is a String and an RFC 2046 media type; " + NoControl),
        new(Cc, "cc-subject-crlf", "`subject` header with CR LF", InvalidMessage, NoControl),
        new(Cc, "cc-type-crlf", "`type` header with CR LF", InvalidMessage, NoControl),
        new(Cc, "cc-subject-nul", "`subject` header with U+0000", InvalidMessage, NoControl),
        new(Cc, "cc-structured-subject-crlf", "structured, `subject` with an escaped CR LF", InvalidMessage, NoControl),
        new(Cc, "cc-structured-content-type-crlf", "valid structured body, content type `application/cloudevents+json\\r\\n`", InvalidMessage, "the message's content type is no RFC 2045 media type"),
        new(Utf8, "utf8-id-header", "`id` header whose bytes are not UTF-8", InvalidMessage, NotUtf8),
        new(Utf8, "utf8-subject-header", "`subject` header whose bytes are not UTF-8", InvalidMessage, NotUtf8),
        new(Utf8, "utf8-structured-attribute", "structured body, invalid UTF-8 inside `subject`", InvalidMessage, NotJson),
        new(Utf8, "utf8-structured-data", "structured body, invalid UTF-8 inside a string of `data`", InvalidMessage, NotJson),
        new(Utf8, "utf8-structured-lone-surrogate", "structured, `subject` with an escaped lone surrogate `\\ud800`", InvalidMessage, "a lone surrogate is no Unicode character, so the String is invalid"),
        new(Utf8, "utf8-binary-data", "binary mode, `application/octet-stream` data that is not UTF-8", Handled, "binary-mode data is opaque bytes"),
        new(Required, "specversion-0.1", "`specversion` 0.1", InvalidMessage, "not a CloudEvents version"),
        new(Required, "specversion-2.0", "`specversion` 2.0", InvalidMessage, "not a CloudEvents version this library knows"),
        new(Required, "specversion-absent", "binary mode, `id`/`source`/`type` but no `specversion`", InvalidMessage, "specversion is required"),
        new(Required, "specversion-absent-structured", "structured, no `specversion`", InvalidMessage, "specversion is required"),
        new(Required, "id-missing", "no `id`", InvalidMessage, "id is required"),
        new(Required, "id-empty", "empty `id`", InvalidMessage, "id must be a non-empty string"),
        new(Required, "source-missing", "no `source`", InvalidMessage, "source is required"),
        new(Required, "type-missing", "no `type`", InvalidMessage, "type is required"),
        new(Required, "source-not-uri-reference", "`source` `http://[::1`", InvalidMessage, "source must be a URI-reference"),
        new(Required, "time-not-rfc3339", "`time` `yesterday`", InvalidMessage, "time must be an RFC 3339 timestamp"),
        new(Required, "time-without-offset", "`time` `2026-01-02T03:04:05`", InvalidMessage, "an RFC 3339 timestamp has an offset"),
        new(Wire, "wt-id-binary", "`id` as the wire's bytes type", Handled, "byte values are accepted: UTF-8 text on RabbitMQ, base64 where the wire's binary reads as CloudEvents Binary (README)"),
        new(Wire, "wt-id-utf8-text", "`id` as a long string given as UTF-8 bytes", Handled, "a string whose bytes are UTF-8"),
        new(Wire, "wt-ext-binary", "extension as bytes", Handled, "as wt-id-binary"),
        new(Wire, "wt-ext-int", "extension as a 32-bit integer", Handled, "read as its invariant text"),
        new(Wire, "wt-ext-long", "extension as a 64-bit integer", Handled, "read as its invariant text"),
        new(Wire, "wt-ext-bool", "extension as a boolean", Handled, "read as `true`/`false`"),
        new(Wire, "wt-time-timestamp", "`time` as the wire's timestamp", Handled, "read as an RFC 3339 timestamp"),
        new(Wire, "wt-ext-table", "extension as a nested table", InvalidMessage, "no CloudEvents type is a table"),
        new(Wire, "wt-ext-list", "extension as an array", InvalidMessage, "no CloudEvents type is an array"),
        new(Wire, "wt-foreign-binary", "foreign header as bytes", Handled, Ignored),
        new(Wire, "wt-foreign-int", "foreign header as an integer", Handled, Ignored),
        new(Wire, "wt-foreign-long", "foreign header as a long", Handled, Ignored),
        new(Wire, "wt-foreign-bool", "foreign header as a boolean", Handled, Ignored),
        new(Wire, "wt-foreign-timestamp", "foreign header as a timestamp", Handled, Ignored),
        new(Wire, "wt-foreign-table", "foreign header as a nested table", Handled, Ignored),
        new(Wire, "wt-foreign-list", "foreign header as an array", Handled, Ignored),
        new(Big, "big-500-extensions", "500 extension attributes", Handled, "the spec sets no limit on extensions"),
        new(Big, "big-64k-value", "one 64 KiB extension value", Handled, "the spec sets no limit on a value's length"),
        new(Bodies, "sb-array", "structured body that is a JSON array", InvalidMessage, "a structured event is a JSON object (arrays are the batch format)"),
        new(Bodies, "sb-null", "structured body `null`", InvalidMessage, "a structured event is a JSON object"),
        new(Bodies, "sb-deep-1000", "structured event whose `data` is nested 1,000 deep", InvalidMessage, "beyond the JSON parser's nesting limit (RFC 8259 9 lets parsers limit depth)"),
        new(Bodies, "sb-truncated", "truncated JSON", InvalidMessage, "not JSON"),
        new(Bodies, "sb-data-base64-not-base64", "`data_base64` that is not base64", InvalidMessage, "data_base64 must be base64 (RFC 4648)"),
        new(Bodies, "sb-data-and-data-base64", "`data` together with `data_base64`", InvalidMessage, "the JSON format forbids both"),
        new(Bodies, "sb-valid-data-base64", "a valid structured event with `data_base64` (control)", Handled, "valid"),
        new(Prior, "pa-negative", "prior-attempts header -5", Handled, "a valid CloudEvent; the count cannot be negative, so the handler sees attempt 1"),
        new(Prior, "pa-int-max", "prior-attempts header 2147483647 (int)", Handled, "a valid CloudEvent; the attempt number must not overflow below 1"),
        new(Prior, "pa-long-max", "prior-attempts header 9223372036854775807 (long)", Handled, "a valid CloudEvent; the attempt number must not wrap below 1"),
    ];

    private static readonly Dictionary<string, Decision> ByInput = Decisions.ToDictionary(d => d.Input, StringComparer.Ordinal);

    /// <summary>Per input and transport: how it travelled when not as given (<c>structured</c> instead, or <c>not carried</c>).</summary>
    private static readonly ConcurrentDictionary<(string Input, string Transport), string> Notes = new();

    public static Decision Of(string input) => ByInput[input];

    internal static void Note(string input, string transport, string note) => Notes[(input, transport)] = note;

    /// <summary>The ledger's poison-corpus section: each input, its expected outcome, and how each transport carried it.</summary>
    public static void AppendLedgerSection(StringBuilder text)
    {
        ArgumentNullException.ThrowIfNull(text);
        text.AppendLine();
        text.AppendLine("## Poison corpus: expected outcome per input");
        text.AppendLine();
        text.AppendLine("The `Poison_*` cases send these raw messages (then 100 good events, Concurrency 1, Prefetch 1). The expected outcome is the same on every transport:");
        text.AppendLine("`handled` (the CloudEvents spec allows it) or `InvalidMessage` (dead-lettered exactly once with that reason, body intact, never seen by a handler, one warning naming the message).");
        text.AppendLine("The last column says where the input travelled otherwise in this run: in structured mode, or not at all because that wire cannot carry it.");
        text.AppendLine();
        text.AppendLine("| group | input | message | expected | why | carried otherwise |");
        text.AppendLine("|---|---|---|---|---|---|");
        foreach (var d in Decisions)
        {
            var notes = Notes.Where(n => n.Key.Input == d.Input).GroupBy(n => n.Value).OrderBy(g => g.Key, StringComparer.Ordinal)
                .Select(g => $"{g.Key} on {string.Join(", ", g.Select(n => n.Key.Transport).Order(StringComparer.Ordinal))}");
            text.AppendLine($"| {d.Group} | {d.Input} | {d.What.Replace("|", "\\|", StringComparison.Ordinal)} | {(d.Expected == Handled ? "handled" : "InvalidMessage")} | {d.Why} | {string.Join("; ", notes)} |");
        }
    }
}

public abstract partial class ConformanceSuite<TFixture>
{
    private const string PoisonSource = "urn:poison-corpus";
    private const string PoisonType = "com.example.poison";
    private const string PoisonRejectType = "com.example.poison.reject";
    private const string ExtensionName = "extvalue";
    private const int GoodEventsAfterPoison = 100;

    /// <summary>One input: the message, its structured-mode twin for wires that cannot carry it as given, and what a handled one must look like.</summary>
    private sealed record PoisonInput(PoisonCorpus.Decision Decision, RawMessage Message)
    {
        public RawMessage? Structured { get; init; }

        /// <summary>For inputs expected to be handled: the event id the handler sees.</summary>
        public string? EventId { get; init; }

        /// <summary>The id the message carries as text, if any: how a handler delivery of an input that should never get there is recognised.</summary>
        public string? WireId { get; init; }

        /// <summary>For inputs expected to be handled: what is wrong with the handled delivery, or <c>null</c>.</summary>
        public Func<Seen, string?>? Check { get; init; }
    }

    private sealed record SentInput(PoisonInput Input, RawMessage Message, bool AsStructured, string? BrokerMessageId)
    {
        public string Key => Input.Decision.Input;

        /// <summary>True when <paramref name="seen"/> is this input reaching a handler: by the id it carries, or (binary mode) by its body as data.</summary>
        public bool Is(Seen seen) =>
            (Input.WireId is { Length: > 0 } id && seen.Event.Id == id) || (seen.Event.Data is byte[] data && data.AsSpan().SequenceEqual(Message.Body));
    }

    [Fact(Timeout = 120_000)]
    public Task Poison_control_characters_in_content_type_and_attributes_are_dead_lettered_and_the_consumer_keeps_working() => Case(() =>
    {
        var inputs = new List<PoisonInput>
        {
            Binary("cc-content-type-crlf", [], contentType: "application/json\r\n", body: Encoding.UTF8.GetBytes($"{{\"poison\":\"{Guid.NewGuid():N}\"}}")),
            Binary("cc-subject-crlf", [("subject", "line one\r\nline two")]),
            Binary("cc-type-crlf", [("type", "com.example.poison\r\nx-injected: 1")]),
            Binary("cc-subject-nul", [("subject", "nul\0inside")]),
            Structured("cc-structured-subject-crlf", StructuredJson(NewPoisonId("cc"), ",\"subject\":\"line one\\r\\nline two\"")),
            Structured("cc-structured-content-type-crlf", StructuredJson(NewPoisonId("cc"), $",\"poisonkey\":\"{Guid.NewGuid():N}\""), "application/cloudevents+json\r\n"),
        };
        return RunPoisonCorpusAsync(inputs);
    });

    [Fact(Timeout = 120_000)]
    public Task Poison_invalid_utf8_in_attributes_and_structured_bodies_is_dead_lettered_and_the_consumer_keeps_working() => Case(() =>
    {
        var invalid = new byte[] { 0xFF, 0xFE, 0xC3, 0x28 };
        var opaque = invalid.Concat(Guid.NewGuid().ToByteArray()).ToArray();
        var inputs = new List<PoisonInput>
        {
            Binary("utf8-id-header", [("id", new Utf8Text([.. Encoding.UTF8.GetBytes(NewPoisonId("utf8")), .. invalid]))]),
            Binary("utf8-subject-header", [("subject", new Utf8Text([.. "caf"u8, .. invalid]))]),
            Structured("utf8-structured-attribute", Splice(StructuredJson(NewPoisonId("utf8"), ",\"subject\":\"caf@\""), invalid)),
            Structured("utf8-structured-data", Splice(StructuredJson(NewPoisonId("utf8"), ",\"datacontenttype\":\"application/json\",\"data\":{\"text\":\"caf@\"}"), invalid)),
            Structured("utf8-structured-lone-surrogate", StructuredJson(NewPoisonId("utf8"), ",\"subject\":\"a\\ud800b\"")),
            Binary("utf8-binary-data", [], contentType: "application/octet-stream", body: opaque) with
            {
                Check = s => s.Event.Data is byte[] data && data.AsSpan().SequenceEqual(opaque) ? null : "the data is not the bytes sent",
            },
        };
        return RunPoisonCorpusAsync(inputs);
    });

    [Fact(Timeout = 120_000)]
    public Task Poison_missing_or_wrong_required_attributes_are_dead_lettered_and_the_consumer_keeps_working() => Case(() =>
    {
        var inputs = new List<PoisonInput>
        {
            Binary("specversion-0.1", [("specversion", "0.1")]),
            Binary("specversion-2.0", [("specversion", "2.0")]),
            Binary("specversion-absent", [("specversion", null)]),
            Structured("specversion-absent-structured", Encoding.UTF8.GetBytes(
                $"{{\"id\":\"{NewPoisonId("sv")}\",\"source\":\"{PoisonSource}\",\"type\":\"{PoisonType}\"}}")),
            Binary("id-missing", [("id", null)]),
            Binary("id-empty", [("id", string.Empty)]) with
            {
                // SNS refuses empty message attribute values: there the same input goes in structured mode.
                Structured = StructuredMessage("id-empty", Encoding.UTF8.GetBytes(
                    $"{{\"specversion\":\"1.0\",\"id\":\"\",\"source\":\"{PoisonSource}\",\"type\":\"{PoisonType}\",\"poisonkey\":\"{Guid.NewGuid():N}\"}}")),
            },
            Binary("source-missing", [("source", null)]),
            Binary("type-missing", [("type", null)]),
            Binary("source-not-uri-reference", [("source", "http://[::1")]),
            Binary("time-not-rfc3339", [("time", "yesterday")]),
            Binary("time-without-offset", [("time", "2026-01-02T03:04:05")]),
        };
        return RunPoisonCorpusAsync(inputs);
    });

    [Fact(Timeout = 120_000)]
    public Task Poison_header_wire_types_are_read_or_dead_lettered_and_the_consumer_keeps_working() => Case(() =>
    {
        var idBytes = Encoding.UTF8.GetBytes(NewPoisonId("wt-id-binary"));
        var idText = NewPoisonId("wt-id-utf8-text");
        var extBytes = Encoding.UTF8.GetBytes("bytes ✓ " + Guid.NewGuid().ToString("N"));
        var time = new DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.Zero);
        var table = new Dictionary<string, object?>(StringComparer.Ordinal) { ["nested"] = "table", ["n"] = 1, ["inner"] = new Dictionary<string, object?> { ["deeper"] = true } };
        var list = new List<object?> { "a", 1, true, new List<object?> { 2L } };
        string? Extension(Seen s, string expected) =>
            s.Event[ExtensionName] is string value && value == expected ? null : $"extension '{ExtensionName}' is '{s.Event[ExtensionName]}' ({s.Event[ExtensionName]?.GetType().Name}), expected '{expected}'";
        string? NoExtensions(Seen s) =>
            s.Event.GetPopulatedAttributes().Where(a => a.Key.IsExtension).Select(a => a.Key.Name).ToList() is { Count: > 0 } extra
                ? $"a foreign header became attribute(s) {string.Join(", ", extra)}"
                : null;
        var inputs = new List<PoisonInput>
        {
            Binary("wt-id-binary", [("id", idBytes)]) with { EventId = Fixture.BinaryAttributeText(idBytes) },
            Binary("wt-id-utf8-text", [("id", new Utf8Text(Encoding.UTF8.GetBytes(idText)))]) with { EventId = idText },
            Binary("wt-ext-binary", [(ExtensionName, extBytes)]) with { Check = s => Extension(s, Fixture.BinaryAttributeText(extBytes)) },
            Binary("wt-ext-int", [(ExtensionName, 42)]) with { Check = s => Extension(s, "42") },
            Binary("wt-ext-long", [(ExtensionName, 9007199254740993L)]) with { Check = s => Extension(s, "9007199254740993") },
            Binary("wt-ext-bool", [(ExtensionName, true)]) with { Check = s => Extension(s, "true") },
            Binary("wt-time-timestamp", [("time", time)]) with { Check = s => s.Event.Time == time ? null : $"time is {s.Event.Time:O}, expected {time:O}" },
            Binary("wt-ext-table", [(ExtensionName, table)]),
            Binary("wt-ext-list", [(ExtensionName, list)]),
            Binary("wt-foreign-binary", [], foreign: [new("foreign-binary", extBytes)]) with { Check = NoExtensions },
            Binary("wt-foreign-int", [], foreign: [new("foreign-int", 42)]) with { Check = NoExtensions },
            Binary("wt-foreign-long", [], foreign: [new("foreign-long", long.MinValue)]) with { Check = NoExtensions },
            Binary("wt-foreign-bool", [], foreign: [new("foreign-bool", false)]) with { Check = NoExtensions },
            Binary("wt-foreign-timestamp", [], foreign: [new("foreign-timestamp", time)]) with { Check = NoExtensions },
            Binary("wt-foreign-table", [], foreign: [new("foreign-table", table)]) with { Check = NoExtensions },
            Binary("wt-foreign-list", [], foreign: [new("foreign-list", list)]) with { Check = NoExtensions },
        };
        return RunPoisonCorpusAsync(inputs);
    });

    [Fact(Timeout = 120_000)]
    public Task Poison_oversized_attributes_500_extensions_and_a_64k_value_are_handled_and_the_consumer_keeps_working() => Case(() =>
    {
        var extensions = Enumerable.Range(0, 500).Select(i => ($"ext{i}", (object?)$"value {i}")).ToArray();
        var big = string.Concat(Enumerable.Repeat("0123456789abcdef", 64 * 1024 / 16));
        var manyId = NewPoisonId("big-500-extensions");
        var bigId = NewPoisonId("big-64k-value");
        var inputs = new List<PoisonInput>
        {
            Binary("big-500-extensions", extensions, id: manyId) with
            {
                Structured = StructuredMessage("big-500-extensions", StructuredJson(manyId, string.Concat(extensions.Select(e => $",\"{e.Item1}\":\"{e.Item2}\"")))),
                Check = s =>
                {
                    var wrong = extensions.Where(e => s.Event[e.Item1] as string != (string)e.Item2!).Select(e => e.Item1).ToList();
                    return wrong.Count == 0 ? null : $"{wrong.Count} of the 500 extensions are missing or changed (first: {wrong[0]})";
                },
            },
            Binary("big-64k-value", [("extbig", big)], id: bigId) with
            {
                Structured = StructuredMessage("big-64k-value", StructuredJson(bigId, $",\"extbig\":\"{big}\"")),
                Check = s => s.Event["extbig"] as string == big ? null : $"the 64 KiB value arrived as {(s.Event["extbig"] as string)?.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "nothing"} characters",
            },
        };
        return RunPoisonCorpusAsync(inputs);
    });

    [Fact(Timeout = 120_000)]
    public Task Poison_structured_bodies_that_are_not_a_cloudevent_object_are_dead_lettered_and_the_consumer_keeps_working() => Case(() =>
    {
        var deep = new StringBuilder();
        for (var i = 0; i < 1000; i++)
        {
            deep.Append("{\"a\":");
        }
        deep.Append('1').Append('}', 1000);
        var validId = NewPoisonId("sb-valid");
        var inputs = new List<PoisonInput>
        {
            Structured("sb-array", [(byte)'[', .. StructuredJson(NewPoisonId("sb"), string.Empty), (byte)']']),
            Structured("sb-null", "null"u8.ToArray()),
            Structured("sb-deep-1000", StructuredJson(NewPoisonId("sb"), ",\"datacontenttype\":\"application/json\",\"data\":" + deep)),
            Structured("sb-truncated", StructuredJson(NewPoisonId("sb"), ",\"data\":{\"a\":[1,2,3]}")[..^12]),
            Structured("sb-data-base64-not-base64", StructuredJson(NewPoisonId("sb"), ",\"data_base64\":\"!!! not base64 !!!\"")),
            Structured("sb-data-and-data-base64", StructuredJson(NewPoisonId("sb"), ",\"datacontenttype\":\"application/json\",\"data\":{\"a\":1},\"data_base64\":\"AAEC\"")),
            Structured("sb-valid-data-base64", StructuredJson(validId, ",\"datacontenttype\":\"application/octet-stream\",\"data_base64\":\"AAEC/w==\"")) with
            {
                EventId = validId,
                Check = s => s.Event.Data is byte[] data && data.AsSpan().SequenceEqual(new byte[] { 0, 1, 2, 255 }) ? null : "the data is not 00 01 02 FF",
            },
        };
        return RunPoisonCorpusAsync(inputs);
    });

    [Fact(Timeout = 120_000)]
    public Task Poison_prior_attempts_header_negative_or_huge_does_not_break_attempt_numbers_and_the_consumer_keeps_working() => Case(() =>
    {
        // Where the transport keeps its own count of earlier attempts in a header (RabbitMQ, Service Bus) this is that header;
        // elsewhere the broker counts attempts and a header of that name is a foreign one.
        var header = Fixture.PriorAttemptsHeader ?? "messaging-prior-attempts";
        string? AttemptOne(Seen s) => s.Attempt == 1 ? null : $"the handler saw attempt {s.Attempt}, expected 1";
        string? AttemptValid(Seen s) => s.Attempt >= 1 ? null : $"the handler saw attempt {s.Attempt}, an attempt number below 1";
        var inputs = new List<PoisonInput>
        {
            Binary("pa-negative", [], foreign: [new(header, -5)]) with { Check = AttemptOne },
            Binary("pa-int-max", [], foreign: [new(header, int.MaxValue)]) with { Check = AttemptValid },
            Binary("pa-long-max", [], foreign: [new(header, long.MaxValue)]) with { Check = AttemptValid },
        };
        return RunPoisonCorpusAsync(inputs);
    });

    private static string NewPoisonId(string label) => $"poison-{label}-{Guid.NewGuid():N}";

    /// <summary>A binary-mode input: specversion 1.0, a fresh id, source and type, with <paramref name="changes"/> applied (null removes).</summary>
    private PoisonInput Binary(
        string input, (string Name, object? Value)[] changes, string? contentType = "text/plain", byte[]? body = null,
        KeyValuePair<string, object?>[]? foreign = null, string? id = null)
    {
        var decision = PoisonCorpus.Of(input);
        id ??= NewPoisonId(input);
        var attributes = new List<(string Name, object? Value)> { ("specversion", "1.0"), ("id", id), ("source", PoisonSource), ("type", PoisonType) };
        foreach (var (name, value) in changes)
        {
            var index = attributes.FindIndex(a => a.Name == name);
            if (index >= 0)
            {
                attributes.RemoveAt(index);
            }
            if (value is not null)
            {
                attributes.Insert(index >= 0 ? index : attributes.Count, (name, value));
            }
        }
        var headers = attributes.Select(a => new KeyValuePair<string, object?>(Fixture.BinaryAttributeName(a.Name), a.Value)).ToList();
        headers.AddRange(foreign ?? []);
        var message = new RawMessage(headers, body ?? Encoding.UTF8.GetBytes($"poison corpus: {input} {Guid.NewGuid():N}"), contentType)
        {
            MessageId = $"raw-{input}-{Guid.NewGuid():N}",
        };
        var wireId = attributes.FirstOrDefault(a => a.Name == "id").Value as string;
        return new PoisonInput(decision, message) { EventId = decision.Expected == Handled ? wireId : null, WireId = wireId };
    }

    private static PoisonInput Structured(string input, byte[] body, string contentType = "application/cloudevents+json; charset=utf-8")
    {
        var decision = PoisonCorpus.Of(input);
        var id = System.Text.RegularExpressions.Regex.Match(Encoding.UTF8.GetString(body), "\"id\":\"([^\"]*)\"") is { Success: true } m ? m.Groups[1].Value : null;
        return new(decision, StructuredMessage(input, body, contentType)) { EventId = decision.Expected == Handled ? id : null, WireId = id };
    }

    private static RawMessage StructuredMessage(string input, byte[] body, string contentType = "application/cloudevents+json; charset=utf-8") =>
        new([], body, contentType) { MessageId = $"raw-{input}-{Guid.NewGuid():N}" };

    /// <summary>A structured-mode JSON event (specversion 1.0, <paramref name="id"/>, source, type) followed by <paramref name="members"/>.</summary>
    private static byte[] StructuredJson(string id, string members) =>
        Encoding.UTF8.GetBytes($"{{\"specversion\":\"1.0\",\"id\":\"{id}\",\"source\":\"{PoisonSource}\",\"type\":\"{PoisonType}\"{members}}}");

    /// <summary>Replaces the first '@' of <paramref name="json"/> with <paramref name="bytes"/> (to put bytes that are not UTF-8 inside a JSON string).</summary>
    private static byte[] Splice(byte[] json, byte[] bytes)
    {
        var at = Array.IndexOf(json, (byte)'@');
        return [.. json.AsSpan(0, at), .. bytes, .. json.AsSpan(at + 1)];
    }

    /// <summary>
    /// Sends the inputs a wire can carry, then one event the handler rejects (to replay later) and 100 good events, on a
    /// subscription with Concurrency 1 and Prefetch 1; then checks every input's outcome against the decisions, the warnings,
    /// the good events, and that the dead-letter store still peeks and replays around the invalid messages.
    /// </summary>
    private async Task RunPoisonCorpusAsync(IReadOnlyList<PoisonInput> inputs)
    {
        var watch = Stopwatch.StartNew();
        var output = TestContext.Current.TestOutputHelper;
        var (topic, sub) = Names();
        var logs = new LogCapture();
        var heal = new TaskCompletionSource();
        var probe = new Probe
        {
            Behaviour = (c, _) =>
            {
                if (c.Event.Type == PoisonRejectType && !heal.Task.IsCompleted)
                {
                    c.Reject("poison corpus: rejected until healed, then replayed");
                }
                return Task.CompletedTask;
            },
        };
        // Long leases: each input must be handled, dead-lettered and warned about once, which a lapsed short lease would repeat.
        var host = await ConformanceHost.StartAsync(Fixture, probe, Subscribe(topic, sub, s => s.WithConcurrency(1).WithPrefetch(1)), services: services =>
        {
            logs.AddTo(services);
            Fixture.UseLongLeases(services);
        });
        var failed = true;
        try
        {
            await ExercisePoisonCorpusAsync(host, probe, logs, heal, topic, sub, inputs);
            failed = false;
        }
        finally
        {
            try
            {
                await host.DisposeAsync();
            }
            catch (Exception ex) when (failed)
            {
                // A consumer that died on a poison message may fail the stop as well; the case's own failure says more.
                output?.WriteLine($"Stopping the host failed too: {ex.GetType().FullName}: {ex.Message}");
            }
        }
        output?.WriteLine($"{Fixture.TransportName}: {watch.Elapsed.TotalSeconds:0.0}s");
    }

    private async Task ExercisePoisonCorpusAsync(ConformanceHost host, Probe probe, LogCapture logs, TaskCompletionSource heal, string topic, string sub, IReadOnlyList<PoisonInput> inputs)
    {
        var output = TestContext.Current.TestOutputHelper;
        var sent = new List<SentInput>();
        foreach (var input in inputs)
        {
            var message = input.Message;
            var structured = false;
            if (Fixture.CannotCarry(message) is { } reason)
            {
                if (input.Structured is { } twin && Fixture.CannotCarry(twin) is null)
                {
                    message = twin;
                    structured = true;
                    PoisonCorpus.Note(input.Decision.Input, Fixture.TransportName, "structured");
                    output?.WriteLine($"{input.Decision.Input}: sent in structured mode on {Fixture.TransportName}: {reason}");
                }
                else
                {
                    // The wire cannot physically carry this input: skipped here, the others still run.
                    PoisonCorpus.Note(input.Decision.Input, Fixture.TransportName, "not carried");
                    output?.WriteLine($"{input.Decision.Input}: not sent on {Fixture.TransportName}: {reason}");
                    continue;
                }
            }
            var brokerId = await Fixture.PublishRawAsync(topic, message, Ct);
            sent.Add(new SentInput(input, message, structured, brokerId));
        }
        Assert.NotEmpty(sent);
        var rejected = NewEvent(PoisonRejectType);
        await host.Publisher.PublishAsync(topic, rejected, Ct);
        var good = Enumerable.Range(0, GoodEventsAfterPoison).Select(_ => NewEvent()).ToList();
        await host.Publisher.PublishBatchAsync(topic, good, Ct);

        var goodIds = good.Select(e => e.Id!).ToHashSet(StringComparer.Ordinal);
        var invalid = sent.Where(s => s.Input.Decision.Expected == InvalidMessage).ToList();
        var handled = sent.Where(s => s.Input.Decision.Expected == Handled).ToList();
        var handledIds = handled.Select(s => s.Input.EventId!).ToHashSet(StringComparer.Ordinal);
        Task<string> Explain() => ExplainAsync(host, probe, logs, sub, sent, goodIds, rejected.Id!);

        // The good events were sent after every input, through one handler slot: once they are handled, the inputs were processed.
        await ExplainOnTimeoutAsync(
            () => Wait.UntilAsync(() => goodIds.IsSubsetOf(probe.Handled.Select(h => h.Event.Id!)), $"the {GoodEventsAfterPoison} good events are handled"),
            Explain);
        await ExplainOnTimeoutAsync(
            () => Wait.UntilAsync(() => handled.All(s => probe.Handled.Any(h => h.Event.Id == s.Input.EventId) || probe.Attempts.Any(s.Is)),
                $"the {handled.Count} valid inputs reach the handler", TimeSpan.FromSeconds(10)),
            Explain);
        // An invalid input that (wrongly) reached the handler is not dead-lettered as well: do not wait for it.
        var expectedDead = invalid.Count(s => !probe.Attempts.Any(s.Is)) + 1;
        var dead = await ExplainOnTimeoutAsync(
            () => Wait.UntilAsync(() => host.DeadLetters.PeekAsync(sub, 1000, Ct), d => d.Count >= expectedDead,
                $"{expectedDead - 1} invalid inputs and the rejected event are dead-lettered"),
            Explain);

        var problems = new List<string>();
        bool ReachedHandler(SentInput s) => probe.Attempts.Any(s.Is);
        CheckDeadLetters(dead, sent, rejected.Id!, sub, problems, ReachedHandler, expectRejected: true);

        // The handler never saw an invalid input; it saw each valid one once, as documented; and nothing else but the good events.
        foreach (var s in invalid.Where(ReachedHandler))
        {
            problems.Add($"{s.Key}: expected InvalidMessage, but the handler saw it as {string.Join(", ", probe.Attempts.Where(s.Is).Select(a => $"id '{Clip(a.Event.Id)}'"))}");
        }
        foreach (var s in handled)
        {
            var seen = probe.Handled.Where(h => h.Event.Id == s.Input.EventId).ToList();
            if (seen.Count == 0 && probe.Attempts.Where(s.Is).ToList() is { Count: > 0 } other)
            {
                problems.Add($"{s.Key}: expected handled as id '{Clip(s.Input.EventId)}', the handler saw id(s) {string.Join(", ", other.Select(a => $"'{Clip(a.Event.Id)}'"))}");
            }
            else if (seen.Count != 1)
            {
                problems.Add($"{s.Key}: expected handled once, the handler saw it {seen.Count} times");
            }
            else if (s.Input.Check?.Invoke(seen[0]) is { } wrong)
            {
                problems.Add($"{s.Key}: handled, but {wrong}");
            }
        }
        var allowed = new HashSet<string>(goodIds.Concat(handledIds).Append(rejected.Id!), StringComparer.Ordinal);
        var unexpected = probe.Attempts.Where(a => !allowed.Contains(a.Event.Id ?? string.Empty) && !sent.Any(s => s.Is(a))).ToList();
        if (unexpected.Count > 0)
        {
            problems.Add($"the handler saw {unexpected.Count} event(s) that match neither an input nor a good event: {string.Join(", ", unexpected.Select(a => $"id '{Clip(a.Event.Id)}' type '{Clip(a.Event.Type)}'"))}");
        }
        var goodHandled = probe.Handled.Where(h => goodIds.Contains(h.Event.Id!)).ToList();
        if (goodHandled.Count != GoodEventsAfterPoison)
        {
            problems.Add($"the {GoodEventsAfterPoison} good events were handled {goodHandled.Count} times");
        }

        // One warning per invalid message, naming it.
        var warnings = logs.Entries.Where(e => e.Template.Contains("is not a valid CloudEvent", StringComparison.Ordinal) && e.Value("Subscription") == sub).ToList();
        if (warnings.Count != invalid.Count)
        {
            problems.Add($"{warnings.Count} invalid-message warnings for {invalid.Count} invalid inputs");
        }
        foreach (var w in warnings.Where(w => w.Level != LogLevel.Warning || string.IsNullOrEmpty(w.Value("MessageId"))))
        {
            problems.Add($"an invalid-message log entry at {w.Level} names no message: {w.Message}");
        }
        if (warnings.Select(w => w.Value("MessageId")).Distinct(StringComparer.Ordinal).Count() != warnings.Count)
        {
            problems.Add("several invalid-message warnings name the same message");
        }
        foreach (var s in invalid.Where(s => s.BrokerMessageId is not null && !ReachedHandler(s)))
        {
            var naming = warnings.Count(w => w.Value("MessageId") == s.BrokerMessageId && w.Message.Contains(s.BrokerMessageId!, StringComparison.Ordinal));
            if (naming != 1)
            {
                problems.Add($"{s.Key}: {naming} warnings name its message id {s.BrokerMessageId}, expected 1");
            }
        }

        // The dead-letter store still peeks and replays around the invalid messages.
        heal.SetResult();
        var replayed = await host.DeadLetters.ReplayAsync(sub, d => d.Event?.Id == rejected.Id, Ct);
        if (replayed != 1)
        {
            problems.Add($"replaying the rejected event returned {replayed}, expected 1");
        }
        else
        {
            await Wait.UntilAsync(() => probe.Handled.Any(h => h.Event.Id == rejected.Id), "the replayed event is handled");
            var again = probe.Handled.Single(h => h.Event.Id == rejected.Id);
            if (again.Attempt != 1)
            {
                problems.Add($"the replayed event was handled at attempt {again.Attempt}, expected 1");
            }
        }
        var left = await Wait.UntilAsync(() => host.DeadLetters.PeekAsync(sub, 1000, Ct), d => d.All(l => l.Event?.Id != rejected.Id), "the replayed event left the dead letters");
        CheckDeadLetters(left, sent, rejected.Id!, sub, problems, ReachedHandler, expectRejected: false);

        output?.WriteLine($"{Fixture.TransportName}: {sent.Count} of {inputs.Count} inputs sent ({sent.Count(s => s.AsStructured)} in structured mode), {invalid.Count} expected dead-lettered, {handled.Count} expected handled.");
        Assert.True(problems.Count == 0, $"{Fixture.TransportName}: {problems.Count} problem(s):\n  " + string.Join("\n  ", problems.Distinct(StringComparer.Ordinal)));
    }

    /// <summary>Each invalid input dead-lettered exactly once (matched by body) with uniform metadata; nothing else but the rejected event.</summary>
    private static void CheckDeadLetters(
        IReadOnlyList<DeadLetteredEvent> dead, List<SentInput> sent, string rejectedId, string subscription, List<string> problems, Func<SentInput, bool> reachedHandler, bool expectRejected)
    {
        var rejected = dead.Where(d => d.Event?.Id == rejectedId).ToList();
        if (expectRejected && (rejected.Count != 1 || rejected[0].Metadata.Reason != DeadLetterReason.Rejected))
        {
            problems.Add($"the rejected event: {rejected.Count} dead letters ({string.Join(", ", rejected.Select(r => r.Metadata.Reason))}), expected 1 with reason Rejected");
        }
        if (!expectRejected && rejected.Count != 0)
        {
            problems.Add("the replayed event is still in the dead letters");
        }
        var others = dead.Where(d => d.Event?.Id != rejectedId).ToList();
        foreach (var s in sent)
        {
            var letters = others.Where(d => d.Body.Span.SequenceEqual(s.Message.Body)).ToList();
            if (s.Input.Decision.Expected == Handled)
            {
                if (letters.Count > 0)
                {
                    problems.Add($"{s.Key}: expected handled, but dead-lettered ({letters[0].Metadata.Reason}: {letters[0].Metadata.Description})");
                }
                continue;
            }
            if (letters.Count == 0 && reachedHandler(s))
            {
                continue; // reported as "the handler saw it"
            }
            if (letters.Count != 1)
            {
                problems.Add($"{s.Key}: expected dead-lettered once with InvalidMessage{(expectRejected ? string.Empty : " (and still peekable after the replay)")}, found {letters.Count} dead letters");
                continue;
            }
            var m = letters[0].Metadata;
            if (m.Reason != DeadLetterReason.InvalidMessage || m.AttemptCount != 1 || letters[0].Event is not null
                || string.IsNullOrWhiteSpace(m.Description) || m.SourceSubscription != subscription)
            {
                problems.Add($"{s.Key}: dead letter with reason {m.Reason}, attempts {m.AttemptCount}, event {(letters[0].Event is null ? "null" : "decoded")}, subscription {m.SourceSubscription}, description '{m.Description}'; expected InvalidMessage, 1, null, {subscription} and a description");
            }
        }
        var unmatched = others.Where(d => !sent.Any(s => d.Body.Span.SequenceEqual(s.Message.Body))).ToList();
        if (unmatched.Count > 0)
        {
            problems.Add($"{unmatched.Count} dead letter(s) match no input: {string.Join("; ", unmatched.Select(d => $"{d.Metadata.Reason} '{Clip(Encoding.UTF8.GetString(d.Body.Span))}'"))}");
        }
    }

    private static async Task ExplainOnTimeoutAsync(Func<Task> wait, Func<Task<string>> explain)
    {
        try
        {
            await wait();
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException(ex.Message + Environment.NewLine + await explain(), ex);
        }
    }

    private static async Task<T> ExplainOnTimeoutAsync<T>(Func<Task<T>> wait, Func<Task<string>> explain)
    {
        try
        {
            return await wait();
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException(ex.Message + Environment.NewLine + await explain(), ex);
        }
    }

    /// <summary>What happened to each input so far, for a case that timed out (typically: one input stalled the consumer).</summary>
    private async Task<string> ExplainAsync(ConformanceHost host, Probe probe, LogCapture logs, string subscription, List<SentInput> sent, HashSet<string> goodIds, string rejectedId)
    {
        var text = new StringBuilder();
        text.AppendLine($"{Fixture.TransportName}: {probe.Handled.Count(h => goodIds.Contains(h.Event.Id!))}/{goodIds.Count} good events handled; the rejected event was attempted {probe.AttemptsOf(rejectedId).Count()} time(s).");
        IReadOnlyList<DeadLetteredEvent>? letters = null;
        try
        {
            letters = await host.DeadLetters.PeekAsync(subscription, 1000, CancellationToken.None);
        }
        catch (Exception ex)
        {
            text.AppendLine($"Peeking the dead letters failed: {ex.GetType().FullName}: {ex.Message}");
        }
        foreach (var s in sent)
        {
            var handled = s.Input.EventId is { } id && probe.Handled.Any(h => h.Event.Id == id);
            var seen = probe.Attempts.FirstOrDefault(s.Is);
            var letter = letters?.FirstOrDefault(d => d.Body.Span.SequenceEqual(s.Message.Body));
            var warned = logs.Entries.Any(e => s.BrokerMessageId is not null && e.Value("MessageId") == s.BrokerMessageId);
            var state = handled ? "handled"
                : seen is not null ? $"reached the handler as id '{Clip(seen.Event.Id)}'"
                : letter is not null ? $"dead-lettered ({letter.Metadata.Reason}: {Clip(letter.Metadata.Description)})"
                : "neither handled nor dead-lettered";
            text.AppendLine($"  {s.Key} [expected {s.Input.Decision.Expected}{(s.AsStructured ? ", sent structured" : string.Empty)}]: {state}{(warned ? ", warned" : string.Empty)}");
        }
        foreach (var entry in logs.Entries.Where(e => !e.Template.Contains("is not a valid CloudEvent", StringComparison.Ordinal)).Take(8))
        {
            text.AppendLine($"  log {entry.Level} {entry.Category}: {Clip(entry.Message)}{(entry.Exception is null ? string.Empty : $" ({entry.Exception.GetType().Name}: {Clip(entry.Exception.Message)})")}");
        }
        return text.ToString();
    }

    private static string Clip(string? text) =>
        text is null ? "(null)" : (text.Length <= 160 ? text : text[..160] + "...").Replace("\r", "\\r", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
}
