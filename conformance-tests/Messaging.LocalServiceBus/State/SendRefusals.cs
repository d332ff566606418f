namespace Messaging.LocalServiceBus.State;

/// <summary>
/// Injected throttling: while a refusal is active, messages sent to its entity (or to any entity) are refused with
/// <c>com.microsoft:server-busy</c> and nothing is stored.
/// </summary>
internal sealed class SendRefusals
{
    readonly Lock gate = new();
    readonly List<Refusal> active = [];

    /// <summary>Refuses sends to <paramref name="path"/> (a queue or topic, any casing), or to every entity when null, until disposed.</summary>
    public IDisposable Add(string? path)
    {
        var refusal = new Refusal(this, path);
        lock (gate)
        {
            active.Add(refusal);
        }

        return refusal;
    }

    public void ThrowIfRefused(string target)
    {
        lock (gate)
        {
            foreach (var refusal in active)
            {
                if (refusal.Path is null || string.Equals(refusal.Path, target, StringComparison.OrdinalIgnoreCase))
                {
                    throw ServiceBusErrorException.ServerBusy(target);
                }
            }
        }
    }

    void Remove(Refusal refusal)
    {
        lock (gate)
        {
            active.Remove(refusal);
        }
    }

    sealed class Refusal(SendRefusals owner, string? path) : IDisposable
    {
        public string? Path { get; } = path;

        public void Dispose() => owner.Remove(this);
    }
}
