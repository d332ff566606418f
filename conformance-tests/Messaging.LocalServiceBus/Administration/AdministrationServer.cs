using System.Net;
using System.Xml;
using System.Xml.Linq;
using Messaging.LocalServiceBus.State;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Messaging.LocalServiceBus.Administration;

/// <summary>
/// The legacy ATOM management API that ServiceBusAdministrationClient speaks (plain HTTP with the development
/// emulator): PUT/GET/DELETE on /{queue}, /{topic}, /{topic}/Subscriptions/{subscription}, with
/// QueueDescription / TopicDescription / SubscriptionDescription entries.
/// </summary>
internal sealed class AdministrationServer(ServiceBusNamespace serviceBus, SasTokenValidator tokens) : IAsyncDisposable
{
    internal static readonly XNamespace Atom = "http://www.w3.org/2005/Atom";
    internal static readonly XNamespace ServiceBus = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect";
    internal static readonly XNamespace Instance = "http://www.w3.org/2001/XMLSchema-instance";
    static readonly XNamespace CountDetails = "http://schemas.microsoft.com/netservices/2011/06/servicebus";

    WebApplication? app;

    public int Port { get; private set; }

    public async Task StartAsync(int port, CancellationToken cancellationToken)
    {
        if (app is not null)
        {
            return;
        }

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, port));
        var web = builder.Build();
        web.Map("/{**path}", HandleAsync);
        await web.StartAsync(cancellationToken).ConfigureAwait(false);
        var address = web.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        Port = new Uri(address).Port;
        app = web;
    }

    /// <summary>Closes the HTTP port and its connections; a later <see cref="StartAsync"/> listens on the same port.</summary>
    public async Task StopAsync()
    {
        var web = app;
        app = null;
        if (web is not null)
        {
            await web.StopAsync().ConfigureAwait(false);
            await web.DisposeAsync().ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync() => await StopAsync().ConfigureAwait(false);

    async Task HandleAsync(HttpContext context)
    {
        var segments = (context.Request.Path.Value ?? string.Empty).Split('/', StringSplitOptions.RemoveEmptyEntries).Select(Uri.UnescapeDataString).ToArray();
        if (tokens.Validate(context.Request.Headers.Authorization.ToString(), DateTimeOffset.UtcNow) is { } unauthorized)
        {
            await WriteErrorAsync(context, 401, $"Unauthorized: {unauthorized}").ConfigureAwait(false);
            return;
        }

        try
        {
            var method = context.Request.Method;
            XElement? body = null;
            if (HttpMethods.IsPut(method))
            {
                using var reader = new StreamReader(context.Request.Body);
                var text = await reader.ReadToEndAsync(context.RequestAborted).ConfigureAwait(false);
                body = XElement.Parse(text);
            }

            bool update = context.Request.Headers.IfMatch.Count > 0;
            var (status, document) = segments switch
            {
                ["$Resources", "queues"] when HttpMethods.IsGet(method) => (200, Feed("Queues", Page(serviceBus.ListQueues(), context).Select(q => QueueEntry(q, context)))),
                ["$Resources", "topics"] when HttpMethods.IsGet(method) => (200, Feed("Topics", Page(serviceBus.ListTopics(), context).Select(t => TopicEntry(t, context)))),
                [var topic, var word] when IsSubscriptions(word) && HttpMethods.IsGet(method)
                    => (200, Feed("Subscriptions", Page(serviceBus.ListSubscriptions(topic), context).Select(s => SubscriptionEntry(s, context)))),
                [var name] => HandleQueueOrTopic(method, name, body, update, context),
                [var topic, var word, var subscription] when IsSubscriptions(word) => HandleSubscription(method, topic, subscription, body, update, context),
                [var topic, var word, var subscription, var rulesWord, ..] when IsSubscriptions(word) && string.Equals(rulesWord, "Rules", StringComparison.OrdinalIgnoreCase)
                    => HandleRules(method, topic, subscription, segments.Length > 4 ? segments[4] : null, context),
                _ => throw ServiceBusErrorException.BadArgument($"'{context.Request.Path}' is not a Service Bus management resource."),
            };
            await WriteAsync(context, status, document).ConfigureAwait(false);
        }
        catch (ServiceBusErrorException error)
        {
            await WriteErrorAsync(context, error.StatusCode, error.Message).ConfigureAwait(false);
        }
        catch (Exception exception) when (exception is XmlException or FormatException or InvalidDataException)
        {
            await WriteErrorAsync(context, 400, $"The request body is not a valid entity description: {exception.Message}").ConfigureAwait(false);
        }
    }

    // The SDK pages listings with $skip/$top and stops at a short or empty page.
    static IEnumerable<T> Page<T>(IEnumerable<T> items, HttpContext context)
    {
        int skip = int.TryParse(context.Request.Query["$skip"], out var s) && s > 0 ? s : 0;
        int top = int.TryParse(context.Request.Query["$top"], out var t) && t > 0 ? t : 100;
        return items.Skip(skip).Take(top);
    }

    static bool IsSubscriptions(string word) => string.Equals(word, "Subscriptions", StringComparison.OrdinalIgnoreCase);

    (int, XElement?) HandleQueueOrTopic(string method, string name, XElement? body, bool update, HttpContext context)
    {
        if (HttpMethods.IsGet(method))
        {
            if (serviceBus.FindQueue(name) is { } queue)
            {
                return (200, QueueEntry(queue, context));
            }

            if (serviceBus.FindTopic(name) is { } topic)
            {
                return (200, TopicEntry(topic, context));
            }

            throw ServiceBusErrorException.EntityNotFound(name);
        }

        if (HttpMethods.IsDelete(method))
        {
            if (!serviceBus.DeleteQueue(name) && !serviceBus.DeleteTopic(name))
            {
                throw ServiceBusErrorException.EntityNotFound(name);
            }

            return (200, null);
        }

        if (HttpMethods.IsPut(method))
        {
            var description = Description(body!);
            if (description.Name == ServiceBus + "QueueDescription")
            {
                var options = AtomDescriptions.ReadQueue(description);
                if (update)
                {
                    serviceBus.UpdateQueue(name, options);
                    return (200, QueueEntry(serviceBus.FindQueue(name)!, context));
                }

                serviceBus.CreateQueue(name, options);
                return (201, QueueEntry(serviceBus.FindQueue(name)!, context));
            }

            if (description.Name == ServiceBus + "TopicDescription")
            {
                var options = AtomDescriptions.ReadTopic(description);
                if (update)
                {
                    serviceBus.UpdateTopic(name, options);
                    return (200, TopicEntry(serviceBus.FindTopic(name)!, context));
                }

                serviceBus.CreateTopic(name, options);
                return (201, TopicEntry(serviceBus.FindTopic(name)!, context));
            }

            throw ServiceBusErrorException.BadArgument($"Expected a QueueDescription or TopicDescription, got {description.Name.LocalName}.");
        }

        throw ServiceBusErrorException.BadArgument($"{method} is not supported on an entity.");
    }

    (int, XElement?) HandleSubscription(string method, string topic, string name, XElement? body, bool update, HttpContext context)
    {
        if (HttpMethods.IsGet(method))
        {
            var subscription = serviceBus.FindSubscription(topic, name) ?? throw ServiceBusErrorException.EntityNotFound($"{topic}/Subscriptions/{name}");
            return (200, SubscriptionEntry(subscription, context));
        }

        if (HttpMethods.IsDelete(method))
        {
            return serviceBus.DeleteSubscription(topic, name) ? (200, null) : throw ServiceBusErrorException.EntityNotFound($"{topic}/Subscriptions/{name}");
        }

        if (HttpMethods.IsPut(method))
        {
            var description = Description(body!);
            if (description.Name != ServiceBus + "SubscriptionDescription")
            {
                throw ServiceBusErrorException.BadArgument($"Expected a SubscriptionDescription, got {description.Name.LocalName}.");
            }

            var options = AtomDescriptions.ReadSubscription(description);
            if (update)
            {
                serviceBus.UpdateSubscription(topic, name, options);
                return (200, SubscriptionEntry(serviceBus.FindSubscription(topic, name)!, context));
            }

            serviceBus.CreateSubscription(topic, name, options);
            return (201, SubscriptionEntry(serviceBus.FindSubscription(topic, name)!, context));
        }

        throw ServiceBusErrorException.BadArgument($"{method} is not supported on a subscription.");
    }

    // Only the default rule exists: every subscription receives every message (TrueFilter).
    (int, XElement?) HandleRules(string method, string topic, string subscription, string? rule, HttpContext context)
    {
        _ = serviceBus.FindSubscription(topic, subscription) ?? throw ServiceBusErrorException.EntityNotFound($"{topic}/Subscriptions/{subscription}");
        if (HttpMethods.IsGet(method) && rule is null)
        {
            return (200, Feed("Rules", [DefaultRuleEntry(context)]));
        }

        if (HttpMethods.IsGet(method) && string.Equals(rule, "$Default", StringComparison.OrdinalIgnoreCase))
        {
            return (200, DefaultRuleEntry(context));
        }

        throw ServiceBusErrorException.NotSupported(
            "Subscription rules other than the default TrueFilter rule are not supported by the local Service Bus endpoint (no SQL or correlation filters, no rule changes).");
    }

    static XElement Description(XElement entry) =>
        entry.Element(Atom + "content")?.Elements().FirstOrDefault()
        ?? throw new InvalidDataException("The entry has no content element with an entity description.");

    XElement QueueEntry(MessageEntity queue, HttpContext context)
    {
        var counts = serviceBus.CountMessages(queue);
        return Entry(queue.Path, context, AtomDescriptions.WriteQueue((LocalQueueOptions)queue.Options, queue.CreatedAt, queue.UpdatedAt, counts, CountDetails, BaseAddress(context)));
    }

    static XElement TopicEntry(TopicEntity topic, HttpContext context) =>
        Entry(topic.Name, context, AtomDescriptions.WriteTopic(topic.Options, topic.CreatedAt, topic.UpdatedAt, topic.Subscriptions.Count));

    XElement SubscriptionEntry(MessageEntity subscription, HttpContext context)
    {
        var counts = serviceBus.CountMessages(subscription);
        var name = subscription.Path[(subscription.Path.LastIndexOf('/') + 1)..];
        return Entry(name, context, AtomDescriptions.WriteSubscription((LocalSubscriptionOptions)subscription.Options, subscription.CreatedAt, subscription.UpdatedAt, counts, CountDetails, BaseAddress(context)));
    }

    // Service Bus reports forwarding targets as absolute URIs of the namespace.
    static Uri BaseAddress(HttpContext context) => new($"{context.Request.Scheme}://{context.Request.Host}/");

    static XElement DefaultRuleEntry(HttpContext context) => Entry("$Default", context, AtomDescriptions.WriteDefaultRule());

    static XElement Entry(string title, HttpContext context, XElement description) =>
        new(Atom + "entry",
            new XElement(Atom + "id", $"{context.Request.Scheme}://{context.Request.Host}{context.Request.Path}"),
            new XElement(Atom + "title", new XAttribute("type", "text"), title),
            new XElement(Atom + "updated", XmlConvert.ToString(DateTime.UtcNow, XmlDateTimeSerializationMode.Utc)),
            new XElement(Atom + "content", new XAttribute("type", "application/xml"), description));

    static XElement Feed(string title, IEnumerable<XElement> entries) =>
        new(Atom + "feed",
            new XElement(Atom + "title", new XAttribute("type", "text"), title),
            new XElement(Atom + "updated", XmlConvert.ToString(DateTime.UtcNow, XmlDateTimeSerializationMode.Utc)),
            entries);

    static async Task WriteAsync(HttpContext context, int status, XElement? document)
    {
        context.Response.StatusCode = status;
        if (document is null)
        {
            return;
        }

        context.Response.ContentType = "application/atom+xml;type=entry;charset=utf-8";
        await context.Response.WriteAsync(document.ToString(SaveOptions.DisableFormatting), context.RequestAborted).ConfigureAwait(false);
    }

    static async Task WriteErrorAsync(HttpContext context, int status, string detail)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/xml; charset=utf-8";
        var error = new XElement("Error", new XElement("Code", status), new XElement("Detail", detail));
        await context.Response.WriteAsync(error.ToString(SaveOptions.DisableFormatting), context.RequestAborted).ConfigureAwait(false);
    }
}
