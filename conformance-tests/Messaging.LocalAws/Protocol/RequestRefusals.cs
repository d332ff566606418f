namespace Messaging.LocalAws.Protocol;

/// <summary>
/// Injected unavailability: while a refusal is active, the requests it covers (every request, one service's, or one
/// action's) are answered with 503 <c>ServiceUnavailable</c> before anything is read from or written to the brokers.
/// </summary>
internal sealed class RequestRefusals
{
    private readonly Lock _gate = new();
    private readonly List<Refusal> _active = [];

    /// <summary>Refuses the requests to <paramref name="service"/> ("sns" or "sqs"; null: both) naming <paramref name="action"/> (null: any), until disposed.</summary>
    public IDisposable Add(string? service, string? action)
    {
        var refusal = new Refusal(this, service, action);
        lock (_gate)
        {
            _active.Add(refusal);
        }

        return refusal;
    }

    /// <param name="service">"sns" or "sqs".</param>
    /// <param name="action">The operation the request names; null when it names none (only refusals of every action apply).</param>
    public void ThrowIfRefused(string service, string? action)
    {
        lock (_gate)
        {
            foreach (var refusal in _active)
            {
                if ((refusal.Service is null || refusal.Service == service)
                    && (refusal.Action is null || string.Equals(refusal.Action, action, StringComparison.OrdinalIgnoreCase)))
                {
                    throw AwsServiceException.ServiceUnavailable();
                }
            }
        }
    }

    private void Remove(Refusal refusal)
    {
        lock (_gate)
        {
            _active.Remove(refusal);
        }
    }

    private sealed class Refusal(RequestRefusals owner, string? service, string? action) : IDisposable
    {
        public string? Service { get; } = service;
        public string? Action { get; } = action;

        public void Dispose() => owner.Remove(this);
    }
}
