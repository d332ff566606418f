using Microsoft.Extensions.Hosting;

namespace Messaging.LocalAws;

/// <summary>
/// Replaces the console lifetime the web host would install: the endpoint lives inside test processes, where
/// Ctrl+C and SIGTERM belong to the process, not to one of its listeners. The standalone entry point handles
/// those signals itself.
/// </summary>
internal sealed class EmbeddedHostLifetime : IHostLifetime
{
    public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
