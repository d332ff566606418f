namespace Messaging.Envelope;

/// <summary>A message read from a broker is not a valid CloudEvent. Such messages are dead-lettered at once.</summary>
public sealed class InvalidCloudEventException : Exception
{
    public InvalidCloudEventException(string message) : base(message) { }

    public InvalidCloudEventException(string message, Exception innerException) : base(message, innerException) { }
}
