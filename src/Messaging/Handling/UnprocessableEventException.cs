namespace Messaging.Handling;

/// <summary>Thrown by a handler to dead-letter the event at once, without retries.</summary>
public sealed class UnprocessableEventException : Exception
{
    public UnprocessableEventException(string reason) : base(reason) { }

    public UnprocessableEventException(string reason, Exception innerException) : base(reason, innerException) { }
}
