using Messaging.Aws;
using Messaging.DeadLetters;
using Messaging.Hosting;
using Messaging.Publishing;
using Messaging.PubSub;
using Messaging.RabbitMQ;
using Messaging.ServiceBus;
using Messaging.Topology;
using Messaging.Transport;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Messaging.Cli;

/// <summary>
/// The library as a service would run it, from configuration only, without consumers: every transport is registered and
/// <c>Messaging:Transport</c> selects one; subscriptions come from <c>Messaging:Subscriptions:{name}:Topic</c>.
/// </summary>
internal sealed class CliSession : IAsyncDisposable
{
    private readonly ServiceProvider _services;

    private CliSession(ServiceProvider services, MessagingOptions options, IConfiguration configuration)
    {
        _services = services;
        Options = options;
        Configuration = configuration;
    }

    /// <summary>The whole configuration read.</summary>
    public IConfiguration Configuration { get; }

    public MessagingOptions Options { get; }

    public IMessageTransport Transport => _services.GetRequiredService<IMessageTransport>();

    public IDeadLetterStore DeadLetters => Transport.DeadLetters;

    public IEventPublisher Publisher => _services.GetRequiredService<IEventPublisher>();

    public MessagingModel Model => _services.GetRequiredService<MessagingModel>();

    public static CliSession Open(IConfiguration configuration)
    {
        var services = new ServiceCollection();
        services.AddLogging();
        var forServices = CliConfiguration.ForServices(configuration);
        services.AddSingleton(forServices);
        var messaging = services.AddMessaging(forServices).AddRabbitMq().AddPubSub().AddSnsSqs().AddServiceBus();
        foreach (var (name, topic) in CliConfiguration.DeclaredSubscriptions(forServices))
        {
            try
            {
                messaging.AddSubscription(name, topic, _ => { });
            }
            catch (ArgumentException ex)
            {
                throw new CliException(ExitCodes.UsageError, $"Messaging:Subscriptions:{name}: {CliConfiguration.OneLine(ex.Message)}", ex);
            }
        }
        var provider = services.BuildServiceProvider();
        try
        {
            var options = provider.GetRequiredService<IOptions<MessagingOptions>>().Value;
            _ = provider.GetRequiredService<IMessageTransport>();
            return new CliSession(provider, options, configuration);
        }
        catch (Exception ex) when (ex is OptionsValidationException or InvalidOperationException or ArgumentException or FormatException or UriFormatException)
        {
            provider.Dispose();
            var message = ex is OptionsValidationException validation ? string.Join(" ", validation.Failures) : ex.Message;
            throw new CliException(ExitCodes.UsageError, $"configuration: {CliConfiguration.OneLine(message)}", ex);
        }
    }

    /// <summary>The topology the configuration declares, plus <paramref name="extraTopics"/>.</summary>
    public MessagingTopology Topology(IEnumerable<string> extraTopics)
    {
        var declared = Model.BuildTopology(Options);
        var topics = declared.Topics.Concat(extraTopics).Distinct(StringComparer.Ordinal).ToList();
        return declared with { Topics = topics };
    }

    public async ValueTask DisposeAsync() => await _services.DisposeAsync().ConfigureAwait(false);
}
