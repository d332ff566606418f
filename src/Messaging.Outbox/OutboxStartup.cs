using Messaging.Outbox.Storage;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Messaging.Outbox;

/// <summary>
/// Opens the database and creates or migrates the outbox and inbox tables before anything else starts (it is registered
/// first among the hosted services, ahead of the consumers whose handlers use the inbox). A missing database or a wrong
/// connection string fails start-up with a message that names the setting.
/// </summary>
internal sealed class OutboxStartup(OutboxStore store, IOptions<OutboxOptions> options) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        _ = options.Value; // validates Messaging:Outbox first, with its own messages
        try
        {
            await store.MigrateAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            throw store.Dialect.DescribeStartupFailure(ex);
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
