using Messaging.LocalServiceBus.Administration;
using Messaging.LocalServiceBus.Amqp;
using Messaging.LocalServiceBus.State;

namespace Messaging.LocalServiceBus;

/// <summary>
/// A local Azure Service Bus namespace on 127.0.0.1: AMQP 1.0 in the Service Bus dialect for ServiceBusClient and
/// the ATOM administration API for ServiceBusAdministrationClient, state in memory.
/// </summary>
public sealed class LocalServiceBusEndpoint : IAsyncDisposable
{
    readonly LocalServiceBusOptions options;
    readonly ServiceBusNamespace serviceBus;
    readonly SendRefusals sendRefusals = new();
    readonly AmqpServer amqp;
    readonly AdministrationServer administration;
    readonly CancellationTokenSource stopping = new();
    Task? timerLoop;
    int disposed;

    LocalServiceBusEndpoint(LocalServiceBusOptions options)
    {
        this.options = options;
        serviceBus = new ServiceBusNamespace(options.Log);
        var tokens = new SasTokenValidator(options.SharedAccessKeyName, options.SharedAccessKey);
        amqp = new AmqpServer(serviceBus, sendRefusals, tokens, options.Log);
        administration = new AdministrationServer(serviceBus, tokens);
    }

    public int AmqpPort => amqp.Port;

    public int ManagementPort => administration.Port;

    /// <summary>For ServiceBusClient: plain AMQP on the AMQP port, as the SDK connects to the development emulator.</summary>
    public string ConnectionString =>
        $"Endpoint=sb://127.0.0.1:{AmqpPort};SharedAccessKeyName={options.SharedAccessKeyName};SharedAccessKey={options.SharedAccessKey};UseDevelopmentEmulator=true";

    /// <summary>For ServiceBusAdministrationClient: plain HTTP on the management port.</summary>
    public string AdministrationConnectionString =>
        $"Endpoint=sb://127.0.0.1:{ManagementPort};SharedAccessKeyName={options.SharedAccessKeyName};SharedAccessKey={options.SharedAccessKey};UseDevelopmentEmulator=true";

    public static async Task<LocalServiceBusEndpoint> StartAsync(LocalServiceBusOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new LocalServiceBusOptions();
        if (options.TimerResolution <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(options), "TimerResolution must be positive.");
        }

        var endpoint = new LocalServiceBusEndpoint(options);
        try
        {
            if (options.ConfigFilePath is { } path)
            {
                var fileContent = await File.ReadAllTextAsync(path, cancellationToken).ConfigureAwait(false);
                Translate(() => EmulatorConfigFile.Apply(fileContent, endpoint.serviceBus));
            }

            if (options.ConfigJson is { } json)
            {
                Translate(() => EmulatorConfigFile.Apply(json, endpoint.serviceBus));
            }

            endpoint.amqp.Start(options.AmqpPort);
            await endpoint.administration.StartAsync(options.ManagementPort, cancellationToken).ConfigureAwait(false);
            endpoint.timerLoop = endpoint.RunTimerAsync(endpoint.stopping.Token);
            return endpoint;
        }
        catch
        {
            await endpoint.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    public Task CreateQueueAsync(string name, LocalQueueOptions? queueOptions = null, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        Translate(() => serviceBus.CreateQueue(name, queueOptions ?? new LocalQueueOptions()));
        return Task.CompletedTask;
    }

    public Task CreateTopicAsync(string name, LocalTopicOptions? topicOptions = null, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        Translate(() => serviceBus.CreateTopic(name, topicOptions ?? new LocalTopicOptions()));
        return Task.CompletedTask;
    }

    public Task CreateSubscriptionAsync(string topic, string subscription, LocalSubscriptionOptions? subscriptionOptions = null, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        Translate(() => serviceBus.CreateSubscription(topic, subscription, subscriptionOptions ?? new LocalSubscriptionOptions()));
        return Task.CompletedTask;
    }

    /// <summary>
    /// Simulated outage: the AMQP and administration ports stop accepting and every open connection is dropped;
    /// all entities, messages and locks stay (locks keep expiring meanwhile).
    /// </summary>
    public async Task StopListeningAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        amqp.Stop();
        await administration.StopAsync().ConfigureAwait(false);
    }

    /// <summary>Ends a simulated outage: listens on the same AMQP and administration ports again.</summary>
    public async Task StartListeningAsync(CancellationToken cancellationToken = default)
    {
        amqp.Start(amqp.Port);
        await administration.StartAsync(administration.Port, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Injected fault: detaches, from the server side, every receiver link attached to <paramref name="entityPath"/> with
    /// <c>amqp:link:detach-forced</c>, as Service Bus does on upgrades and load balancing; the connection stays open and
    /// the SDK attaches again. The path takes the forms a receiver uses, in any casing: <c>queue</c>,
    /// <c>topic/Subscriptions/subscription</c>, either followed by <c>/$DeadLetterQueue</c> (which is a source of its own).
    /// As on Service Bus, the locks the detached links held stay until they expire: a settlement still arriving on a
    /// detached link changes nothing (the SDK reports MessageLockLost), one the SDK sends over $management by lock token
    /// once it has seen the detach works while the lock lasts, and unsettled messages come back when their locks expire,
    /// counted as delivered once more.
    /// </summary>
    /// <returns>The number of links detached.</returns>
    /// <exception cref="InvalidOperationException">The entity does not exist.</exception>
    public int DetachReceivers(string entityPath)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(entityPath);
        int detached = 0;
        Translate(() => detached = serviceBus.ForceDetachReceivers(EntityAddress.Normalize(entityPath)));
        return detached;
    }

    /// <summary>
    /// Injected fault: every message locked (peek-lock) on <paramref name="entityPath"/> loses its lock now, exactly as if
    /// its lock duration had passed. The path takes the forms <see cref="DetachReceivers"/> takes. Each message is
    /// available again with one more delivery counted (dead-lettered with <c>MaxDeliveryCountExceeded</c> when that was
    /// its last), and its old lock token is lost: renewing the lock, completing, abandoning, deferring or dead-lettering with
    /// it fails with <c>com.microsoft:message-lock-lost</c> (the SDK's MessageLockLost), on the receive link and over
    /// <c>$management</c> alike. Receiver links stay attached.
    /// </summary>
    /// <returns>The number of locks expired.</returns>
    /// <exception cref="InvalidOperationException">The entity does not exist.</exception>
    public int ExpireLocks(string entityPath)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(entityPath);
        int expired = 0;
        Translate(() => expired = serviceBus.ExpireLocks(EntityAddress.Normalize(entityPath), DateTime.UtcNow));
        return expired;
    }

    /// <summary>Receiver links attached to a receive source; a detached link counts until the client has answered the detach.</summary>
    internal int AttachedReceivers(string entityPath) => serviceBus.CountConsumers(EntityAddress.Normalize(entityPath));

    /// <summary>
    /// Injected fault: until the result is disposed, every message sent to <paramref name="entityPath"/> (a queue or topic,
    /// any casing), or to any entity when null, is rejected with <c>com.microsoft:server-busy</c> as a throttled Service
    /// Bus entity rejects it (the SDK's ServiceBusFailureReason.ServiceBusy); scheduling on $management is refused
    /// the same way. Nothing refused is stored; links and connections stay open.
    /// </summary>
    public IDisposable RefuseSends(string? entityPath = null)
    {
        string? path = null;
        if (entityPath is not null)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(entityPath);
            path = EntityAddress.Normalize(entityPath);
        }

        return sendRefusals.Add(path);
    }

    async Task RunTimerAsync(CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(options.TimerResolution);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                try
                {
                    serviceBus.Tick(DateTime.UtcNow);
                }
                catch (Exception exception)
                {
                    options.Log?.Invoke($"timer tick failed: {exception}");
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0)
        {
            return;
        }

        await stopping.CancelAsync().ConfigureAwait(false);
        if (timerLoop is not null)
        {
            await timerLoop.ConfigureAwait(false);
        }

        amqp.Stop();
        await administration.DisposeAsync().ConfigureAwait(false);
        stopping.Dispose();
    }

    static void Translate(Action action)
    {
        try
        {
            action();
        }
        catch (ServiceBusErrorException error)
        {
            throw error.StatusCode switch
            {
                409 => new InvalidOperationException(error.Message, error),
                501 => new NotSupportedException(error.Message, error),
                404 => new InvalidOperationException(error.Message, error),
                _ => new ArgumentException(error.Message, error),
            };
        }
    }
}
