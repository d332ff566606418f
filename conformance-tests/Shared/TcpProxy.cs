using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace Messaging.Testing;

/// <summary>
/// A loopback TCP relay between a client and a broker that cannot be restarted without losing its state (the Pub/Sub
/// emulator): <see cref="ResetAll"/> cuts every connection at once, as a network fault or a server-side stream reset would;
/// <see cref="Hold"/> stops relaying bytes (both ways, open and new connections alike) until released, as a broker that
/// stops answering does.
/// </summary>
internal sealed class TcpProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly IPEndPoint _target;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<TcpClient, byte> _connections = new();
    private readonly Task _accepting;
    private readonly Lock _gateLock = new();
    private TaskCompletionSource? _held;

    public TcpProxy(IPEndPoint target)
    {
        _target = target;
        _listener.Start();
        _accepting = AcceptAsync();
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            _ = RelayAsync(client);
        }
    }

    private async Task RelayAsync(TcpClient client)
    {
        using var server = new TcpClient();
        _connections.TryAdd(client, 0);
        _connections.TryAdd(server, 0);
        try
        {
            await server.ConnectAsync(_target, _stop.Token);
            using var cut = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
            var up = PumpAsync(client.GetStream(), server.GetStream(), cut.Token);
            var down = PumpAsync(server.GetStream(), client.GetStream(), cut.Token);
            await Task.WhenAny(up, down);
            await cut.CancelAsync();
        }
        catch (Exception)
        {
            // Cut, or the other side went away: either way this connection is over.
        }
        finally
        {
            _connections.TryRemove(client, out _);
            _connections.TryRemove(server, out _);
            client.Dispose();
        }
    }

    private async Task PumpAsync(NetworkStream from, NetworkStream to, CancellationToken cancellationToken)
    {
        var buffer = new byte[16 * 1024];
        while (true)
        {
            var read = await from.ReadAsync(buffer, cancellationToken);
            if (read == 0)
            {
                return;
            }
            if (Volatile.Read(ref _held) is { } held)
            {
                await held.Task.WaitAsync(cancellationToken);
            }
            await to.WriteAsync(buffer.AsMemory(0, read), cancellationToken);
        }
    }

    /// <summary>Stops relaying bytes until the returned handle is disposed; nothing is dropped, it is delivered late.</summary>
    public IDisposable Hold()
    {
        lock (_gateLock)
        {
            _held ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }
        return new Release(this);
    }

    private sealed class Release(TcpProxy proxy) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0)
            {
                TaskCompletionSource? held;
                lock (proxy._gateLock)
                {
                    held = proxy._held;
                    proxy._held = null;
                }
                held?.TrySetResult();
            }
        }
    }

    /// <summary>Cuts every open connection; new ones are accepted again at once.</summary>
    public int ResetAll()
    {
        var count = 0;
        foreach (var connection in _connections.Keys)
        {
            try
            {
                if (connection.Client is { } socket)
                {
                    socket.LingerState = new LingerOption(true, 0); // an RST, not a polite close
                }
            }
            catch (ObjectDisposedException)
            {
                // Closed meanwhile by its relay.
            }
            connection.Dispose();
            count++;
        }
        return count / 2;
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        ResetAll();
        await _accepting;
    }
}
