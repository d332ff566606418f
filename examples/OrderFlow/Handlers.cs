using System.Data.Common;
using Messaging.Handling;
using Messaging.Outbox;
using Microsoft.Extensions.Logging;

namespace OrderFlow;

/// <summary>
/// Charges the customer. The payment gateway is flaky: it times out on the first attempt of every other order, and it never
/// accepts customer "mallory". Idempotent: the order's status, the PaymentCompleted event (through the outbox) and the inbox
/// record commit together, so a redelivered OrderPlaced is completed without charging again; a failed attempt rolls all
/// three back.
/// </summary>
public sealed partial class PaymentHandler(IOutboxDatabase database, IInbox inbox, IOutbox outbox, FlowTracker tracker, ILogger<PaymentHandler> logger)
    : IdempotentEventHandler<OrderPlaced>(database, inbox)
{
    protected override async Task HandleAsync(OrderPlaced order, EventContext context, DbTransaction transaction, CancellationToken cancellationToken)
    {
        LogAttempt(order.OrderId, context.Attempt);
        if (order.Customer == "mallory")
        {
            throw new InvalidOperationException($"Payment gateway declined card of {order.Customer}");
        }
        if (context.Attempt == 1 && int.Parse(order.OrderId[^1..], System.Globalization.CultureInfo.InvariantCulture) % 2 == 0)
        {
            throw new TimeoutException("Payment gateway timed out");
        }
        await OrderStore.SetStatusAsync(transaction, order.OrderId, "paid", cancellationToken);
        await outbox.PublishAsync(new PaymentCompleted(order.OrderId, order.Total), transaction, cancellationToken: cancellationToken);
        tracker.Paid(order.OrderId);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "payments: charging order {OrderId} (attempt {Attempt})")]
    private partial void LogAttempt(string orderId, int attempt);
}

/// <summary>Ships paid orders, once per payment however often it is delivered.</summary>
public sealed partial class ShippingHandler(IOutboxDatabase database, IInbox inbox, FlowTracker tracker, ILogger<ShippingHandler> logger)
    : IdempotentEventHandler<PaymentCompleted>(database, inbox)
{
    protected override async Task HandleAsync(PaymentCompleted payment, EventContext context, DbTransaction transaction, CancellationToken cancellationToken)
    {
        await OrderStore.SetStatusAsync(transaction, payment.OrderId, "shipped", cancellationToken);
        LogShipped(payment.OrderId, payment.Amount);
        tracker.Shipped(payment.OrderId);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "shipping: order {OrderId} paid {Amount}, shipped")]
    private partial void LogShipped(string orderId, decimal amount);
}
