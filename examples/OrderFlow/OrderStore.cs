using System.Data.Common;
using Messaging.Outbox;
using Microsoft.Extensions.Hosting;

namespace OrderFlow;

/// <summary>
/// The service's own table, in the same SQLite database as the outbox and the inbox, so that an order's row, the events
/// it publishes and the record that an event was handled commit together.
/// </summary>
public sealed class OrderStore(IOutboxDatabase database) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenConnectionAsync(cancellationToken);
        await ExecuteAsync(connection, null,
            "CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY, customer TEXT NOT NULL, total TEXT NOT NULL, status TEXT NOT NULL)",
            cancellationToken);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Places (or places again, on a later run) an order.</summary>
    public static Task PlaceAsync(DbTransaction transaction, OrderPlaced order, CancellationToken cancellationToken) =>
        ExecuteAsync(transaction.Connection!, transaction,
            "INSERT INTO orders (order_id, customer, total, status) VALUES (@id, @customer, @total, 'placed') " +
            "ON CONFLICT (order_id) DO UPDATE SET customer = excluded.customer, total = excluded.total, status = 'placed'",
            cancellationToken, ("@id", order.OrderId), ("@customer", order.Customer),
            ("@total", order.Total.ToString(System.Globalization.CultureInfo.InvariantCulture)));

    public static Task SetStatusAsync(DbTransaction transaction, string orderId, string status, CancellationToken cancellationToken) =>
        ExecuteAsync(transaction.Connection!, transaction, "UPDATE orders SET status = @status WHERE order_id = @id",
            cancellationToken, ("@id", orderId), ("@status", status));

    /// <summary>How many orders are in each status.</summary>
    public async Task<string> SummaryAsync(CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT status, COUNT(*) FROM orders GROUP BY status ORDER BY status";
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var parts = new List<string>();
        while (await reader.ReadAsync(cancellationToken))
        {
            parts.Add($"{reader.GetInt64(1)} {reader.GetString(0)}");
        }
        return string.Join(", ", parts);
    }

    private static async Task ExecuteAsync(DbConnection connection, DbTransaction? transaction, string sql, CancellationToken cancellationToken,
        params (string Name, object Value)[] parameters)
    {
        await using var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        foreach (var (name, value) in parameters)
        {
            var parameter = command.CreateParameter();
            parameter.ParameterName = name;
            parameter.Value = value;
            command.Parameters.Add(parameter);
        }
        await command.ExecuteNonQueryAsync(cancellationToken);
    }
}
