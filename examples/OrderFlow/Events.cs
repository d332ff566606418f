namespace OrderFlow;

public sealed record OrderPlaced(string OrderId, string Customer, decimal Total);

public sealed record PaymentCompleted(string OrderId, decimal Amount);
