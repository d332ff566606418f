namespace Messaging.Transport;

/// <summary>Where a <see cref="ReceivePipeline"/> is in its life.</summary>
internal enum ConsumerState
{
    /// <summary>Created; its receiver has not started yet.</summary>
    NotStarted,

    /// <summary>Its receiver started and no stop or abort began.</summary>
    Running,

    /// <summary>A stop or an abort began: it receives nothing more.</summary>
    Stopped,
}

/// <summary>A consumer's state for the consumers health check.</summary>
/// <param name="Subscription">The subscription it consumes.</param>
/// <param name="State">Where it is in its life.</param>
/// <param name="Since">When it entered <paramref name="State"/> (null when not started).</param>
/// <param name="ReceiveFailure">The last error of a receive that keeps failing, while it does.</param>
/// <param name="FailingSince">When receiving began to fail, while it does.</param>
internal sealed record ConsumerHealth(string Subscription, ConsumerState State, DateTimeOffset? Since, string? ReceiveFailure, DateTimeOffset? FailingSince);
