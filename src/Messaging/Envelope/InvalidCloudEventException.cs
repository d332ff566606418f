namespace Messaging.Envelope;

/// <summary>A message read from a broker is not a valid CloudEvent. Such messages are dead-lettered at once.</summary>
public sealed class InvalidCloudEventException : Exception
{
    /// <summary>Creates the exception with a message saying what is missing or malformed.</summary>
    public InvalidCloudEventException(string message) : base(message) { }

    /// <summary>Creates the exception with the decoding error as <paramref name="innerException"/>.</summary>
    public InvalidCloudEventException(string message, Exception innerException) : base(message, innerException) { }
}
