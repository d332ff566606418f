namespace Messaging.LocalServiceBus;

/// <summary>Settings of a <see cref="LocalServiceBusEndpoint"/>.</summary>
public sealed class LocalServiceBusOptions
{
    /// <summary>AMQP port on 127.0.0.1; 0 picks a free port.</summary>
    public int AmqpPort { get; set; }

    /// <summary>HTTP port of the administration (ATOM) API on 127.0.0.1; 0 picks a free port.</summary>
    public int ManagementPort { get; set; }

    /// <summary>The key name that put-token requests on $cbs must be signed with.</summary>
    public string SharedAccessKeyName { get; set; } = "RootManageSharedAccessKey";

    /// <summary>The key that put-token signatures are checked against (the official emulator uses this literal value).</summary>
    public string SharedAccessKey { get; set; } = "SAS_KEY_VALUE";

    /// <summary>Path of a topology file in the official emulator's Config.json format, applied at start.</summary>
    public string? ConfigFilePath { get; set; }

    /// <summary>Topology file content in the official emulator's Config.json format, applied at start.</summary>
    public string? ConfigJson { get; set; }

    /// <summary>How often lock expiry, scheduled messages and time-to-live are evaluated.</summary>
    public TimeSpan TimerResolution { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Receives one line per notable event (attach refusals, protocol errors); null keeps quiet.</summary>
    public Action<string>? Log { get; set; }
}

/// <summary>Properties of a queue, named like the SDK's CreateQueueOptions.</summary>
public sealed class LocalQueueOptions
{
    public TimeSpan LockDuration { get; set; } = TimeSpan.FromMinutes(1);
    public int MaxDeliveryCount { get; set; } = 10;
    public TimeSpan DefaultMessageTimeToLive { get; set; } = TimeSpan.MaxValue;
    public bool DeadLetteringOnMessageExpiration { get; set; }
    public string? ForwardDeadLetteredMessagesTo { get; set; }
    public bool RequiresSession { get; set; }
    public bool RequiresDuplicateDetection { get; set; }
    public bool EnablePartitioning { get; set; }
    public string? ForwardTo { get; set; }
}

/// <summary>Properties of a topic.</summary>
public sealed class LocalTopicOptions
{
    public TimeSpan DefaultMessageTimeToLive { get; set; } = TimeSpan.MaxValue;
    public bool RequiresDuplicateDetection { get; set; }
    public bool EnablePartitioning { get; set; }
}

/// <summary>Properties of a subscription, named like the SDK's CreateSubscriptionOptions.</summary>
public sealed class LocalSubscriptionOptions
{
    public TimeSpan LockDuration { get; set; } = TimeSpan.FromMinutes(1);
    public int MaxDeliveryCount { get; set; } = 10;
    public TimeSpan DefaultMessageTimeToLive { get; set; } = TimeSpan.MaxValue;
    public bool DeadLetteringOnMessageExpiration { get; set; }
    public string? ForwardDeadLetteredMessagesTo { get; set; }
    public bool RequiresSession { get; set; }
    public string? ForwardTo { get; set; }
}
