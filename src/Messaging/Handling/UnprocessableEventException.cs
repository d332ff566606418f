namespace Messaging.Handling;

/// <summary>Thrown by a handler to dead-letter the event at once, without retries.</summary>
public sealed class UnprocessableEventException : Exception
{
    /// <summary>Creates the exception; <paramref name="reason"/> is stored with the dead letter as its description.</summary>
    public UnprocessableEventException(string reason) : base(reason) { }

    /// <summary>Creates the exception with the failure that made the event unprocessable as <paramref name="innerException"/>.</summary>
    public UnprocessableEventException(string reason, Exception innerException) : base(reason, innerException) { }
}
