using Messaging.Outbox.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;

namespace Messaging.Outbox.Tests;

public sealed class ShopOrder
{
    public string Id { get; set; } = "";

    public string Status { get; set; } = "";
}

public sealed class ShopContext(DbContextOptions<ShopContext> options) : DbContext(options)
{
    public DbSet<ShopOrder> Orders => Set<ShopOrder>();

    protected override void OnModelCreating(ModelBuilder modelBuilder) =>
        modelBuilder.Entity<ShopOrder>(o =>
        {
            o.ToTable("shop_orders");
            o.HasKey(x => x.Id);
            o.Property(x => x.Id).HasColumnName("id");
            o.Property(x => x.Status).HasColumnName("status");
        });
}

public abstract partial class OutboxStorageTests
{
    private ShopContext NewContext()
    {
        var builder = new DbContextOptionsBuilder<ShopContext>();
        Database.UseFor(builder);
        return new ShopContext(builder.Options);
    }

    [Fact(Timeout = 60_000)]
    public async Task EntityFrameworkCore_changes_outbox_events_and_inbox_records_commit_together()
    {
        var host = await StartAsync();
        var outbox = host.Services.GetRequiredService<IOutbox>();
        var inbox = host.Services.GetRequiredService<IInbox>();
        await using (var setup = NewContext())
        {
            await setup.Database.ExecuteSqlRawAsync("CREATE TABLE shop_orders (id TEXT PRIMARY KEY, status TEXT NOT NULL)", Ct);
        }

        var kept = NewEvent();
        await using (var db = NewContext())
        {
            await using var transaction = await db.Database.BeginTransactionAsync(Ct);
            db.Orders.Add(new ShopOrder { Id = "order-1", Status = "placed" });
            await db.SaveChangesAsync(Ct);
            await outbox.PublishAsync("shop-orders", kept, db, Ct);
            await transaction.CommitAsync(Ct);
        }
        var dropped = NewEvent();
        await using (var db = NewContext())
        {
            await using var transaction = await db.Database.BeginTransactionAsync(Ct);
            db.Orders.Add(new ShopOrder { Id = "order-2", Status = "placed" });
            await db.SaveChangesAsync(Ct);
            await outbox.PublishAsync("shop-orders", dropped, db, Ct);
            await transaction.RollbackAsync(Ct);
        }
        await Wait.UntilAsync(() => Publisher.Sent.Any(s => s.EventId == kept.Id), "the committed event is published");
        await using (var db = NewContext())
        {
            Assert.Equal(["order-1"], await db.Orders.Select(o => o.Id).ToListAsync(Ct));
        }
        Assert.Equal(1, await CountAsync(host, "SELECT COUNT(*) FROM messaging_outbox"));
        Assert.DoesNotContain(Publisher.Sent, s => s.EventId == dropped.Id);

        for (var delivery = 1; delivery <= 2; delivery++)
        {
            await using var db = NewContext();
            await using var transaction = await db.Database.BeginTransactionAsync(Ct);
            Assert.Equal(delivery == 1, await inbox.TryMarkHandledAsync("shop-shipping", kept, db, Ct));
            await transaction.CommitAsync(Ct);
        }

        await using (var db = NewContext())
        {
            var error = await Assert.ThrowsAsync<InvalidOperationException>(() => outbox.PublishAsync("shop-orders", NewEvent(), db, Ct));
            Assert.Contains("BeginTransactionAsync", error.Message, StringComparison.Ordinal);
        }
    }
}
