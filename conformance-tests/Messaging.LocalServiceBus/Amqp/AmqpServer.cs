using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Messaging.LocalServiceBus.State;
using Microsoft.Azure.Amqp;
using Microsoft.Azure.Amqp.Encoding;
using Microsoft.Azure.Amqp.Framing;
using Microsoft.Azure.Amqp.Sasl;
using Microsoft.Azure.Amqp.Transport;

namespace Messaging.LocalServiceBus.Amqp;

/// <summary>
/// Accepts AMQP connections the way the Service Bus SDK opens them against the development emulator: plain TCP,
/// SASL ANONYMOUS (or MSSBCBS), then a claims-based-security put-token before any entity link.
/// </summary>
internal sealed class AmqpServer : IRuntimeProvider
{
    // The Standard tier limit; the SDK sizes message batches from the max-message-size of the sender link attach.
    const ulong MaxMessageSize = 256 * 1024;

    readonly ServiceBusNamespace serviceBus;
    readonly SendRefusals refusals;
    readonly CbsNode cbs;
    readonly Action<string>? log;
    readonly ConcurrentDictionary<AmqpConnection, ConnectionState> connections = new();
    readonly Lock listenerGate = new();
    AmqpSettings? settings;
    TransportListener? listener;
    bool accepting;

    public AmqpServer(ServiceBusNamespace serviceBus, SendRefusals refusals, SasTokenValidator tokens, Action<string>? log)
    {
        this.serviceBus = serviceBus;
        this.refusals = refusals;
        this.log = log;
        cbs = new CbsNode(tokens);
    }

    public int Port { get; private set; }

    public void Start(int port)
    {
        lock (listenerGate)
        {
            if (listener is not null)
            {
                return;
            }

            var amqpSettings = new AmqpSettings { RuntimeProvider = this };
            var sasl = new SaslTransportProvider();
            sasl.Versions.Add(new AmqpVersion(1, 0, 0));
            sasl.AddHandler(new SaslAnonymousHandler());
            sasl.AddHandler(new SaslAnonymousHandler("MSSBCBS"));
            amqpSettings.TransportProviders.Add(sasl);
            var amqp = new AmqpTransportProvider();
            amqp.Versions.Add(new AmqpVersion(1, 0, 0));
            amqpSettings.TransportProviders.Add(amqp);
            settings = amqpSettings;
            accepting = true;

            // The library's TCP listener does not report the port it bound, so "any free port" means reserving one
            // first; another process may take it in between, hence a few attempts.
            for (int attempt = 1; ; attempt++)
            {
                var candidate = port == 0 ? ReserveFreePort() : port;
                var tcp = new TcpTransportSettings { Host = IPAddress.Loopback.ToString(), Port = candidate };
                var transportListener = new AmqpTransportListener([tcp.CreateListener()], amqpSettings);
                try
                {
                    transportListener.Listen(OnAcceptTransport);
                    Port = candidate;
                    listener = transportListener;
                    return;
                }
                catch (SocketException) when (port == 0 && attempt < 5)
                {
                    transportListener.Abort();
                }
            }
        }
    }

    /// <summary>Closes the listening socket and aborts every connection; entity state is untouched.</summary>
    public void Stop()
    {
        TransportListener? current;
        lock (listenerGate)
        {
            current = listener;
            listener = null;
            accepting = false;
        }

        current?.Abort();
        foreach (var connection in connections.Keys)
        {
            connection.Abort();
        }

        connections.Clear();
    }

    static int ReserveFreePort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    void OnAcceptTransport(TransportListener source, TransportAsyncCallbackArgs args)
    {
        if (!Volatile.Read(ref accepting) || settings is null)
        {
            args.Transport?.Abort();
            return;
        }

        var connectionSettings = new AmqpConnectionSettings
        {
            ContainerId = "local-servicebus",
            MaxFrameSize = 64 * 1024,
            IdleTimeOut = 4 * 60 * 1000,
        };
        AmqpConnection? connection = null;
        try
        {
            connection = new AmqpConnection(args.Transport, (ProtocolHeader)args.UserToken, false, settings, connectionSettings);
            connections[connection] = new ConnectionState();
            connection.Closed += (sender, _) => connections.TryRemove((AmqpConnection)sender!, out ConnectionState? _);
            if (!Volatile.Read(ref accepting))
            {
                // Stop ran between the check above and the registration: this connection must not survive the outage.
                connection.Abort();
                return;
            }

            var opening = connection;
            _ = OpenConnectionAsync(opening);
        }
        catch (Exception exception)
        {
            log?.Invoke($"accepting a connection failed: {exception.Message}");
            connection?.SafeClose(exception);
        }
    }

    async Task OpenConnectionAsync(AmqpConnection connection)
    {
        try
        {
            await connection.OpenAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(false);
        }
        catch (Exception exception)
        {
            log?.Invoke($"opening a connection failed: {exception.Message}");
            connection.SafeClose(exception);
        }
    }

    ConnectionState StateOf(AmqpLink link) => connections.GetOrAdd(link.Session.Connection, _ => new ConnectionState());

    public AmqpConnection CreateConnection(TransportBase transport, ProtocolHeader protocolHeader, bool isInitiator, AmqpSettings amqpSettings, AmqpConnectionSettings connectionSettings) =>
        new(transport, protocolHeader, isInitiator, amqpSettings, connectionSettings);

    public AmqpSession CreateSession(AmqpConnection connection, AmqpSessionSettings sessionSettings) =>
        new(connection, sessionSettings, this);

    public AmqpLink CreateLink(AmqpSession session, AmqpLinkSettings linkSettings)
    {
        bool localIsReceiver = linkSettings.Role == true;
        if (localIsReceiver)
        {
            linkSettings.MaxMessageSize = MaxMessageSize;
            linkSettings.TotalLinkCredit = 500;
            linkSettings.AutoSendFlow = true;
            return new ReceivingAmqpLink(session, linkSettings);
        }

        return new SendingAmqpLink(session, linkSettings);
    }

    public IAsyncResult BeginOpenLink(AmqpLink link, TimeSpan timeout, AsyncCallback callback, object state)
    {
        Task? accepting;
        try
        {
            accepting = AttachLink(link);
        }
        catch (ServiceBusErrorException error)
        {
            log?.Invoke($"attach of '{link.Name}' refused: {error.Message}");
            throw Refusal(error);
        }

        if (accepting is null)
        {
            return new CompletedResult(callback, state);
        }

        // A session receiver's attach is answered once a session is locked for it, or refused when none came in time.
        var result = new PendingResult(accepting, state);
        accepting.ContinueWith(_ => callback(result), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return result;
    }

    public void EndOpenLink(IAsyncResult result)
    {
        if (result is PendingResult { Task: var task })
        {
            if (task.Exception?.InnerException is ServiceBusErrorException error)
            {
                log?.Invoke($"session receiver attach refused: {error.Message}");
                throw Refusal(error);
            }

            if (task.Exception?.InnerException is { } other)
            {
                throw new AmqpException(new Error { Condition = "amqp:internal-error", Description = other.Message });
            }
        }
    }

    static AmqpException Refusal(ServiceBusErrorException error) => new(new Error { Condition = error.Condition, Description = error.Message });

    sealed class PendingResult(Task task, object state) : IAsyncResult
    {
        public Task Task { get; } = task;
        public object AsyncState { get; } = state;
        public WaitHandle AsyncWaitHandle => ((IAsyncResult)Task).AsyncWaitHandle;
        public bool CompletedSynchronously => false;
        public bool IsCompleted => Task.IsCompleted;
    }

    // Returns the pending session accept of a session receiver link; null when the attach is answered at once.
    Task? AttachLink(AmqpLink link)
    {
        if (link.IsReceiver)
        {
            if (link.Settings.Target is Microsoft.Azure.Amqp.Transaction.Coordinator)
            {
                throw ServiceBusErrorException.NotSupported("Transactions are not supported by the local Service Bus endpoint.");
            }

            var address = EntityAddress.Normalize((link.Settings.Target as Target)?.Address?.ToString());
            var receiving = (ReceivingAmqpLink)link;
            if (address == CbsNode.Address)
            {
                var connection = StateOf(link);
                RequestResponse.Attach(receiving, connection, request => cbs.Handle(request, connection));
            }
            else if (EntityAddress.IsManagement(address, out var owner))
            {
                StateOf(link).EnsureAuthorized(address);
                var node = new ManagementNode(serviceBus, refusals, owner);
                RequestResponse.Attach(receiving, StateOf(link), node.Handle);
            }
            else
            {
                StateOf(link).EnsureAuthorized(address);
                serviceBus.EnsureSendTarget(address);
                ProducerLink.Attach(receiving, serviceBus, refusals, address, log);
            }

            return null;
        }

        var sending = (SendingAmqpLink)link;
        var source = EntityAddress.Normalize((link.Settings.Source as Source)?.Address?.ToString());
        if (source == CbsNode.Address || EntityAddress.IsManagement(source, out _))
        {
            var replyTo = (link.Settings.Target as Target)?.Address?.ToString()
                ?? throw ServiceBusErrorException.BadArgument("A request-response receiver link needs a target address to reply to.");
            StateOf(link).RegisterReplyLink(replyTo, sending);
            return null;
        }

        StateOf(link).EnsureAuthorized(source);
        var store = serviceBus.ResolveStore(source);
        if ((link.Settings.Source as Source)?.FilterSet is { } filters && filters.TryGetValue<object>(new AmqpSymbol(ConsumerLink.SessionFilterName), out var requested))
        {
            if (!store.IsSessionful)
            {
                throw ServiceBusErrorException.NotAllowed(
                    $"A sessionful message receiver cannot be created on an entity that does not require sessions ('{store.Path}'). Ensure RequiresSession is set to true when creating a Queue or Subscription to enable sessionful behavior.");
            }

            // The SDK sends how long it waits (its try timeout) in com.microsoft:timeout, in milliseconds.
            var wait = link.Settings.Properties?.TryGetValue<uint>(new AmqpSymbol("com.microsoft:timeout"), out var milliseconds) == true
                ? TimeSpan.FromMilliseconds(milliseconds)
                : TimeSpan.FromMinutes(1);
            return ConsumerLink.AcceptSessionAsync(sending, serviceBus, store, requested as string, wait, log);
        }

        ConsumerLink.Attach(sending, serviceBus, store, log);
        return null;
    }

    sealed class CompletedResult : IAsyncResult
    {
        public CompletedResult(AsyncCallback callback, object state)
        {
            AsyncState = state;
            callback(this);
        }

        public object AsyncState { get; }
        public WaitHandle AsyncWaitHandle => throw new NotSupportedException();
        public bool CompletedSynchronously => true;
        public bool IsCompleted => true;
    }
}

/// <summary>
/// What one connection may do: the entity paths its put-token requests were granted for, and the routing of
/// request-response replies (reply-to address to the link that carries them).
/// </summary>
internal sealed class ConnectionState
{
    readonly ConcurrentDictionary<string, SendingAmqpLink> replyLinks = new(StringComparer.Ordinal);
    readonly ConcurrentDictionary<string, bool> authorizedPaths = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>Records a granted audience; an empty path is the whole namespace.</summary>
    public void Authorize(string path) => authorizedPaths[path] = true;

    /// <summary>Service Bus refuses a link to an entity unless a token for the entity (or a parent path) was put first.</summary>
    public void EnsureAuthorized(string address)
    {
        foreach (var path in authorizedPaths.Keys)
        {
            if (path.Length == 0
                || string.Equals(path, address, StringComparison.OrdinalIgnoreCase)
                || address.StartsWith(path + "/", StringComparison.OrdinalIgnoreCase))
            {
                return;
            }
        }

        throw ServiceBusErrorException.Unauthorized(address);
    }

    public void RegisterReplyLink(string address, SendingAmqpLink link)
    {
        replyLinks[address] = link;
        link.Closed += (_, _) => replyLinks.TryRemove(new KeyValuePair<string, SendingAmqpLink>(address, link));
    }

    public SendingAmqpLink? FindReplyLink(string? address) =>
        address is not null && replyLinks.TryGetValue(address, out var link) ? link : null;
}

internal static class EntityAddress
{
    /// <summary>Strips scheme and host (the SDK may send absolute URIs or paths) and the leading slash.</summary>
    public static string Normalize(string? address)
    {
        if (string.IsNullOrEmpty(address))
        {
            throw ServiceBusErrorException.BadArgument("The link has no address.");
        }

        var path = address;
        if (address.Contains("://", StringComparison.Ordinal) && Uri.TryCreate(address, UriKind.Absolute, out var uri))
        {
            path = Uri.UnescapeDataString(uri.AbsolutePath);
        }

        return path.Trim('/');
    }

    public static bool IsManagement(string address, out string owner)
    {
        const string suffix = "/$management";
        if (address.EndsWith(suffix, StringComparison.OrdinalIgnoreCase))
        {
            owner = address[..^suffix.Length];
            return true;
        }

        owner = string.Empty;
        return false;
    }
}
