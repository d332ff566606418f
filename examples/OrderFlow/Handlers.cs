using Messaging.Handling;
using Messaging.Publishing;
using Microsoft.Extensions.Logging;

namespace OrderFlow;

/// <summary>Charges the customer. The payment gateway is flaky: it times out on the first attempt of every other order, and it never accepts customer "mallory".</summary>
public sealed partial class PaymentHandler(IEventPublisher publisher, FlowTracker tracker, ILogger<PaymentHandler> logger) : IEventHandler<OrderPlaced>
{
    public async Task HandleAsync(OrderPlaced order, EventContext context, CancellationToken cancellationToken)
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
        await publisher.PublishAsync(new PaymentCompleted(order.OrderId, order.Total), cancellationToken: cancellationToken);
        tracker.Paid(order.OrderId);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "payments: charging order {OrderId} (attempt {Attempt})")]
    private partial void LogAttempt(string orderId, int attempt);
}

/// <summary>Ships paid orders.</summary>
public sealed partial class ShippingHandler(FlowTracker tracker, ILogger<ShippingHandler> logger) : IEventHandler<PaymentCompleted>
{
    public Task HandleAsync(PaymentCompleted payment, EventContext context, CancellationToken cancellationToken)
    {
        LogShipped(payment.OrderId, payment.Amount);
        tracker.Shipped(payment.OrderId);
        return Task.CompletedTask;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "shipping: order {OrderId} paid {Amount}, shipped")]
    private partial void LogShipped(string orderId, decimal amount);
}
