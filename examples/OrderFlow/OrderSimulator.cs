using Messaging.DeadLetters;
using Messaging.Outbox;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace OrderFlow;

/// <summary>
/// Places a few orders, waits until every order is shipped or dead-lettered, shows the dead letters, then stops the app.
/// In continuous mode it places orders until the app is stopped (one in twenty is declined and ends as a dead letter).
/// Each order is one unit of work: its row in the orders table and its OrderPlaced event (through the outbox) commit together.
/// </summary>
public sealed partial class OrderSimulator(
    IOutboxDatabase database,
    IOutbox outbox,
    OrderStore orders,
    IDeadLetterStore deadLetters,
    FlowTracker tracker,
    IOptions<OrderFlowOptions> options,
    IHostApplicationLifetime lifetime,
    ILogger<OrderSimulator> logger) : BackgroundService
{
    private static readonly string[] Customers = ["alice", "bob", "carol", "dave"];

    private static readonly OrderPlaced[] Orders =
    [
        new("order-1", "alice", 25.00m),
        new("order-2", "bob", 42.50m),
        new("order-3", "mallory", 999.99m),
        new("order-4", "carol", 13.37m),
    ];

    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        options.Value.Continuous ? RunContinuouslyAsync(stoppingToken) : RunOnceAsync(stoppingToken);

    private async Task RunContinuouslyAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.OrderInterval);
        var placed = 0;
        var lastReport = DateTime.UtcNow;
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                placed++;
                var customer = placed % 20 == 0 ? "mallory" : Customers[placed % Customers.Length];
                await PlaceAsync(new OrderPlaced($"order-{placed}", customer, 10m + placed % 90), stoppingToken);
                if (DateTime.UtcNow - lastReport >= TimeSpan.FromSeconds(10))
                {
                    lastReport = DateTime.UtcNow;
                    LogProgress(placed, tracker.ShippedCount);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    private async Task RunOnceAsync(CancellationToken stoppingToken)
    {
        var placed = new HashSet<string>();
        foreach (var order in Orders)
        {
            var sent = await PlaceAsync(order, stoppingToken);
            placed.Add(sent.Id!);
            LogPlaced(order.OrderId, sent.Id, sent.Type);
        }

        var expectedShipped = Orders.Count(o => o.Customer != "mallory");
        var deadline = DateTime.UtcNow.AddSeconds(30);
        IReadOnlyList<DeadLetteredEvent> dead = [];
        while (DateTime.UtcNow < deadline && !stoppingToken.IsCancellationRequested)
        {
            // A durable broker may still hold dead letters of earlier runs: look at this run's events only.
            dead = (await deadLetters.PeekAsync("payments", 100, stoppingToken)).Where(d => d.Event?.Id is { } id && placed.Contains(id)).ToList();
            if (tracker.ShippedCount >= expectedShipped && dead.Count >= 1)
            {
                break;
            }
            await Task.Delay(100, stoppingToken);
        }

        LogSummary(tracker.ShippedCount, Orders.Length, dead.Count);
        LogDatabase(await orders.SummaryAsync(stoppingToken));
        foreach (var letter in dead)
        {
            LogDeadLetter(letter.Event?.Id, letter.Metadata.Reason, letter.Metadata.AttemptCount, letter.Metadata.ExceptionType, letter.Metadata.ExceptionMessage);
        }
        Environment.ExitCode = tracker.ShippedCount == expectedShipped && dead.Count == 1 ? 0 : 1;
        lifetime.StopApplication();
    }

    private async Task<CloudNative.CloudEvents.CloudEvent> PlaceAsync(OrderPlaced order, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await OrderStore.PlaceAsync(transaction, order, cancellationToken);
        var sent = await outbox.PublishAsync(order, transaction, cancellationToken: cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return sent;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "orders table: {Summary}")]
    private partial void LogDatabase(string summary);

    [LoggerMessage(Level = LogLevel.Information, Message = "placed {OrderId} as CloudEvent {EventId} ({Type})")]
    private partial void LogPlaced(string orderId, string? eventId, string? type);

    [LoggerMessage(Level = LogLevel.Information, Message = "continuous: {Placed} orders placed, {Shipped} shipped so far")]
    private partial void LogProgress(int placed, int shipped);

    [LoggerMessage(Level = LogLevel.Information, Message = "done: {Shipped} of {Orders} orders shipped, {DeadLettered} dead-lettered")]
    private partial void LogSummary(int shipped, int orders, int deadLettered);

    [LoggerMessage(Level = LogLevel.Information, Message = "dead letter: event {EventId}, reason {Reason}, after {Attempts} attempts, {ExceptionType}: {ExceptionMessage}")]
    private partial void LogDeadLetter(string? eventId, DeadLetterReason reason, int attempts, string? exceptionType, string? exceptionMessage);
}
