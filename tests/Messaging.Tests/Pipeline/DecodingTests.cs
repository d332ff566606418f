using System.Collections.Concurrent;
using System.Text.Json;
using Messaging.DeadLetters;
using Messaging.Envelope;
using Messaging.Handling;
using Messaging.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace Messaging.Tests.Pipeline;

/// <summary>What the pipeline reads from the broker's message before any handler: the event and the attempt number.</summary>
public sealed class DecodingTests
{
    [Theory]
    [InlineData(typeof(InvalidOperationException))]
    [InlineData(typeof(FormatException))]
    [InlineData(typeof(NullReferenceException))]
    [InlineData(typeof(DecoderFaultException))]
    [InlineData(typeof(InvalidCloudEventException))]
    public async Task A_decoder_throwing_any_exception_dead_letters_the_message_as_invalid_and_no_handler_runs(Type exceptionType)
    {
        var subscription = PipelineHarness.Subscription(concurrency: 1, prefetch: 5);
        await using var services = new ServiceCollection().AddSingleton<RecordingHandler>().BuildServiceProvider();
        var processor = new SubscriptionProcessor(
            subscription,
            [HandlerRegistration.Raw<RecordingHandler>(eventType: null)],
            UnhandledEventAction.Complete,
            services.GetRequiredService<IServiceScopeFactory>(),
            new JsonSerializerOptions(),
            NullLogger.Instance,
            "fake",
            TimeProvider.System);
        await using var harness = await PipelineHarness.StartAsync(subscription, processor.HandleAsync);
        var error = (Exception)Activator.CreateInstance(exceptionType, "byte 7 is not what the codec expected")!;

        var invalid = harness.Submit(new FakeMessage("bad", log: harness.Log) { Decoder = () => throw error });
        var valid = harness.Submit("good");

        await Wait.ForAsync(valid.FirstSettlementCall, "the valid message to be handled");
        await harness.StopAsync();

        Assert.Equal(1, invalid.DeadLetterCalls);
        Assert.Equal(1, invalid.SettlementCalls);
        var metadata = invalid.DeadLetterMetadata!;
        Assert.Equal(DeadLetterReason.InvalidMessage, metadata.Reason);
        Assert.Contains(error.Message, metadata.Description, StringComparison.Ordinal);
        Assert.Equal(subscription.Name, metadata.SourceSubscription);
        Assert.Equal(1, valid.CompleteCalls);
        Assert.Equal(["good"], services.GetRequiredService<RecordingHandler>().Handled);
    }

    [Theory]
    [InlineData(0, 1)]
    [InlineData(-1, 1)]
    [InlineData(int.MinValue, 1)]
    [InlineData(1, 1)]
    [InlineData(4, 4)]
    public async Task The_attempt_is_what_the_broker_counts_and_at_least_one(int brokerAttempt, int expected)
    {
        var attempt = await AttemptSeenByTheHandlerAsync(() => brokerAttempt);

        Assert.Equal(expected, attempt);
    }

    [Theory]
    [InlineData(typeof(InvalidOperationException))]
    [InlineData(typeof(FormatException))]
    [InlineData(typeof(DecoderFaultException))]
    public async Task An_attempt_that_cannot_be_read_counts_as_the_first(Type exceptionType)
    {
        var attempt = await AttemptSeenByTheHandlerAsync(() => throw (Exception)Activator.CreateInstance(exceptionType, "no delivery-count header")!);

        Assert.Equal(1, attempt);
    }

    private static async Task<int> AttemptSeenByTheHandlerAsync(Func<int> readAttempt)
    {
        var seen = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var harness = await PipelineHarness.StartAsync(PipelineHarness.Subscription(concurrency: 1), (delivery, ct) =>
        {
            seen.TrySetResult(delivery.Attempt);
            return delivery.CompleteAsync(ct);
        });
        var message = harness.Submit(new FakeMessage("m1") { AttemptReader = readAttempt });
        var attempt = await Wait.ForAsync(seen.Task, "the handler to run");
        Assert.Equal(attempt, message.Attempt);
        await harness.StopAsync();
        return attempt;
    }

    /// <summary>An exception type no decoder is known to throw.</summary>
    public sealed class DecoderFaultException(string message) : Exception(message);

    private sealed class RecordingHandler : ICloudEventHandler
    {
        private readonly ConcurrentQueue<string> _handled = new();

        public IReadOnlyList<string> Handled => [.. _handled];

        public Task HandleAsync(EventContext context, CancellationToken cancellationToken)
        {
            _handled.Enqueue(context.Event.Id!);
            return Task.CompletedTask;
        }
    }
}
