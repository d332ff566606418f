namespace Messaging.Benchmarks.Harness;

/// <summary>
/// One way of doing the benchmark's work (a raw client, this library, MassTransit, ...). Each measurement gets a
/// fresh destination: <see cref="StartAsync"/> creates it, <see cref="StopAsync"/> removes it.
/// </summary>
internal interface IBenchTarget : IAsyncDisposable
{
    string Name { get; }

    /// <summary>Creates a fresh destination; when <paramref name="consume"/> is set, starts consuming into <paramref name="recorder"/>.</summary>
    Task StartAsync(bool consume, Recorder recorder, CancellationToken cancellationToken);

    /// <summary>Publishes <paramref name="count"/> events as fast as this client competently can; completes when all are confirmed.</summary>
    Task PublishManyAsync(int count, int size, CancellationToken cancellationToken);

    /// <summary>Publishes one event now; the returned task completes when it is confirmed.</summary>
    Task PublishOneAsync(byte[] payload, CancellationToken cancellationToken);

    Task StopAsync();
}
