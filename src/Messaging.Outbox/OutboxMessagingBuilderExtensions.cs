using Messaging.Hosting;
using Messaging.Outbox;
using Messaging.Outbox.Storage;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds the transactional outbox and the inbox to messaging.</summary>
public static class OutboxMessagingBuilderExtensions
{
    /// <summary>
    /// Adds <see cref="IOutbox"/>, <see cref="IInbox"/>, <see cref="IOutboxDatabase"/> and the relay, configured from
    /// <c>Messaging:Outbox</c> (which overrides <paramref name="configure"/>) and validated at start-up. The schema is
    /// created or migrated when the host starts, before the consumers.
    /// </summary>
    /// <param name="builder">The messaging builder.</param>
    /// <param name="configure">Code defaults, e.g. <c>o =&gt; o.UseSqlite("orders.db")</c>.</param>
    /// <returns>The messaging builder.</returns>
    public static MessagingBuilder AddOutbox(this MessagingBuilder builder, Action<OutboxOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var services = builder.Services;
        if (services.Any(d => d.ServiceType == typeof(OutboxStore)))
        {
            throw new InvalidOperationException("AddOutbox was called twice; call it once.");
        }
        var options = services.AddOptions<OutboxOptions>();
        if (configure is not null)
        {
            options.Configure(configure);
        }
        if (builder.Configuration is not null)
        {
            options.Bind(builder.Configuration.GetSection(OutboxOptions.SectionName));
        }
        options.ValidateOnStart();
        services.AddSingleton<IValidateOptions<OutboxOptions>, OutboxOptionsValidator>();
        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton<OutboxDialect>(sp =>
        {
            var value = sp.GetRequiredService<IOptions<OutboxOptions>>().Value;
            return value.Provider == OutboxDatabaseProvider.PostgreSql ? new PostgreSqlOutboxDialect(value) : new SqliteOutboxDialect(value);
        });
        services.AddSingleton<OutboxStore>();
        services.AddSingleton<OutboxSignal>();
        services.AddSingleton<IOutbox, Messaging.Outbox.Outbox>();
        services.AddSingleton<IInbox, Inbox>();
        services.AddSingleton<IOutboxDatabase, OutboxDatabase>();
        // First of the hosted services: the tables exist before the consumers' handlers use the inbox.
        services.Insert(0, ServiceDescriptor.Singleton<IHostedService, OutboxStartup>());
        services.AddSingleton<OutboxRelay>();
        services.AddHostedService(sp => sp.GetRequiredService<OutboxRelay>());
        return builder;
    }
}
