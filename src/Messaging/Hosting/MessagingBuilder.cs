using CloudNative.CloudEvents;
using Messaging.Transport;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Messaging.Hosting;

/// <summary>Fluent configuration of topics, event types, subscriptions, handlers and transports.</summary>
public sealed class MessagingBuilder
{
    internal MessagingBuilder(IServiceCollection services, MessagingModel model, IConfigurationSection? configuration)
    {
        Services = services;
        Model = model;
        Configuration = configuration;
    }

    /// <summary>The service collection the messaging services are registered in.</summary>
    public IServiceCollection Services { get; }

    /// <summary>The <c>Messaging</c> configuration section, when one was given.</summary>
    public IConfigurationSection? Configuration { get; }

    internal MessagingModel Model { get; }

    /// <summary>Declares a topic to provision even if nothing in this service subscribes to it.</summary>
    public MessagingBuilder AddTopic(string topic)
    {
        EntityNames.Validate(topic, "topic");
        if (!Model.Topics.Contains(topic))
        {
            Model.Topics.Add(topic);
        }
        return this;
    }

    /// <summary>Maps a .NET type to a CloudEvent <c>type</c> and the topic it is published to.</summary>
    public MessagingBuilder MapEvent<T>(string topic, string? eventType = null)
    {
        AddTopic(topic);
        Model.MapEvent(typeof(T), new EventMapping(topic, eventType ?? typeof(T).FullName!));
        return this;
    }

    /// <summary>Declares a typed CloudEvents extension attribute, so it is read back with its type from binary-mode messages.</summary>
    public MessagingBuilder AddExtensionAttribute(CloudEventAttribute attribute)
    {
        ArgumentNullException.ThrowIfNull(attribute);
        Model.AddExtension(attribute);
        return this;
    }

    /// <summary>Adds a subscription of <paramref name="topic"/>; handlers and default policy are set through <paramref name="configure"/>.</summary>
    public MessagingBuilder AddSubscription(string name, string topic, Action<SubscriptionBuilder> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        EntityNames.Validate(name, "subscription");
        EntityNames.Validate(topic, "topic");
        if (Model.Subscriptions.ContainsKey(name))
        {
            throw new InvalidOperationException($"Subscription '{name}' is declared twice; subscription names must be unique.");
        }
        var subscription = new SubscriptionModel(name);
        subscription.Defaults.Add(o => o.Topic = topic);
        Model.Subscriptions.Add(name, subscription);
        configure(new SubscriptionBuilder(Services, subscription));
        return this;
    }

    /// <summary>Registers a transport under a name that <c>Messaging:Transport</c> can select.</summary>
    public MessagingBuilder AddTransport(string name, Func<IServiceProvider, TransportContext, IMessageTransport> factory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(factory);
        Model.Transports[name] = factory;
        return this;
    }

    /// <summary>
    /// Binds a transport's options from <c>Messaging:{transportName}</c> and validates them at start-up whenever that
    /// transport is selected. Adapters call this from their <c>Add...</c> method.
    /// </summary>
    public OptionsBuilder<TOptions> AddTransportOptions<TOptions>(string transportName)
        where TOptions : class
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(transportName);
        var options = Services.AddOptions<TOptions>();
        if (Configuration is not null)
        {
            options.Bind(Configuration.GetSection(transportName));
        }
        Services.AddSingleton<IValidateOptions<MessagingOptions>>(sp => new SelectedTransportOptionsValidator<TOptions>(transportName, sp));
        return options;
    }

    /// <summary>Forces a transport regardless of configuration (useful in tests).</summary>
    public MessagingBuilder UseTransport(string name)
    {
        Services.PostConfigure<MessagingOptions>(o => o.Transport = name);
        return this;
    }
}
