using Messaging.Transport;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;

namespace Messaging.Health;

/// <summary>The transport's own cheap check of its broker (<see cref="IMessageTransport.CheckHealthAsync"/>), bounded by the check timeout.</summary>
internal sealed class BrokerHealthCheck(IMessageTransport transport, IOptions<MessagingHealthCheckOptions> options) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var timeout = options.Value.CheckTimeout;
        using var bound = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        bound.CancelAfter(timeout);
        TransportHealth health;
        try
        {
            health = await transport.CheckHealthAsync(bound.Token).WaitAsync(bound.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested)
        {
            return new HealthCheckResult(context.Registration.FailureStatus, $"The {transport.Name} broker did not answer within {timeout}.", ex);
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            return new HealthCheckResult(context.Registration.FailureStatus, $"The {transport.Name} broker cannot be reached: {ex.Message}", ex);
        }
        return health.Status switch
        {
            TransportHealthStatus.Healthy => HealthCheckResult.Healthy(health.Description),
            TransportHealthStatus.Degraded => HealthCheckResult.Degraded(health.Description, health.Exception),
            _ => new HealthCheckResult(context.Registration.FailureStatus, health.Description, health.Exception),
        };
    }
}
