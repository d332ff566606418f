using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace Messaging.Torture;

/// <summary>
/// A loopback TCP relay between the consumer and a broker that cannot be restarted without losing its state (the Pub/Sub
/// emulator): <see cref="ResetAll"/> cuts every connection at once, as a network fault or a server-side stream reset would.
/// </summary>
internal sealed class TcpProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly IPEndPoint _target;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<TcpClient, byte> _connections = new();
    private readonly Task _accepting;

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
            var up = client.GetStream().CopyToAsync(server.GetStream(), cut.Token);
            var down = server.GetStream().CopyToAsync(client.GetStream(), cut.Token);
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
