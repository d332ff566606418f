using CloudNative.CloudEvents;
namespace Messaging.RabbitMQ;

/// <summary>The exchange type that carries a topic. Subscriptions are bound with <c>#</c>, which receives every event of the topic with either type.</summary>
public enum RabbitMqExchangeType
{
    /// <summary>
    /// Every bound queue gets every message; the routing key is not looked at. The cheapest routing RabbitMQ has: on
    /// RabbitMQ 3.10 with quorum queues, the broker spent about 20% less CPU per event than with a topic exchange.
    /// </summary>
    Fanout,

    /// <summary>
    /// Routes on the routing key, which is the event's <c>type</c>: lets queues of your own be bound to a pattern of
    /// event types, at a higher broker cost per event.
    /// </summary>
    Topic,
}

/// <summary>Settings of the RabbitMQ transport (<c>Messaging:RabbitMQ</c>).</summary>
public sealed class RabbitMqTransportOptions
{
    /// <summary>An AMQP URI (<c>amqp://user:pass@host:5672/vhost</c> or <c>amqps://...</c>); when set it wins over the separate settings.</summary>
    public string? Uri { get; set; }

    /// <summary>The broker's host name, when <see cref="Uri"/> is not set. Default <c>localhost</c>.</summary>
    public string Host { get; set; } = "localhost";

    /// <summary>The broker's AMQP port, when <see cref="Uri"/> is not set. Default 5672 (5671 is the convention with <see cref="UseTls"/>).</summary>
    public int Port { get; set; } = 5672;

    /// <summary>The user name, when <see cref="Uri"/> is not set. Default <c>guest</c>, which RabbitMQ accepts only from localhost.</summary>
    public string UserName { get; set; } = "guest";

    /// <summary>The password, when <see cref="Uri"/> is not set. Default <c>guest</c>. Never written to logs or error messages.</summary>
    public string Password { get; set; } = "guest";

    /// <summary>The virtual host, when <see cref="Uri"/> is not set. Default <c>/</c>.</summary>
    public string VirtualHost { get; set; } = "/";

    /// <summary>Connect with TLS (port 5671 by convention).</summary>
    public bool UseTls { get; set; }

    /// <summary>Server name expected in the broker's certificate; defaults to the host of <see cref="Uri"/>, or <see cref="Host"/>.</summary>
    public string? TlsServerName { get; set; }

    /// <summary>
    /// A PEM file with the certificate of the CA that signed the broker's certificate, for brokers whose CA the machine does
    /// not trust (a private CA). The broker's certificate must chain to it and name <see cref="TlsServerName"/>. Unset: the
    /// machine's trusted roots.
    /// </summary>
    public string? TlsCaCertificatePath { get; set; }

    /// <summary>Name shown for this application's connections in the management UI.</summary>
    public string? ClientName { get; set; }

    /// <summary>
    /// Binary (the default: attributes as <c>cloudEvents_*</c> headers, <c>datacontenttype</c> as the content-type property, data
    /// as the body) or structured (one <c>application/cloudevents+json</c> body). Both are always accepted on receive.
    /// </summary>
    public ContentMode ContentMode { get; set; } = ContentMode.Binary;

    /// <summary>
    /// Type of the exchange declared for each topic. An exchange that already exists with another type (or other
    /// properties) is used as it is, with a warning: the broker does not change an exchange's type in place.
    /// </summary>
    public RabbitMqExchangeType ExchangeType { get; set; } = RabbitMqExchangeType.Fanout;

    /// <summary>Channels used for publishing with confirms; batches are pipelined on each.</summary>
    public int PublisherChannels { get; set; } = 4;

    /// <summary>Most unconfirmed publishes in flight per channel.</summary>
    public int MaxOutstandingConfirms { get; set; } = 256;

    /// <summary>How long a publish keeps trying while the connection recovers, before it fails.</summary>
    public TimeSpan PublishTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Delay between reconnection attempts after the broker goes away.</summary>
    public TimeSpan NetworkRecoveryInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Returns of one message copy without acknowledgement (consumer crashes, dropped connections) after which the broker
    /// dead-letters it by itself. A safety net for poison messages that kill the process; ordinary failures follow the
    /// subscription's retry policy.
    /// </summary>
    public int CrashDeliveryLimit { get; set; } = 10;

    /// <summary>The largest event accepted, body plus headers. RabbitMQ's own ceiling is 128 MiB; large messages hurt the broker.</summary>
    public int MaxEventSizeBytes { get; set; } = 8 * 1024 * 1024;
}
