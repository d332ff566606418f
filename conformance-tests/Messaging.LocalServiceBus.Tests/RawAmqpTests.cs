using Microsoft.Azure.Amqp;
using Microsoft.Azure.Amqp.Framing;

namespace Messaging.LocalServiceBus.Tests;

/// <summary>Protocol rules the SDK never breaks, checked with a bare AMQP client.</summary>
public sealed class RawAmqpTests
{
    static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Entity_link_without_a_put_token_is_refused()
    {
        await using var endpoint = await LocalServiceBusEndpoint.StartAsync(cancellationToken: Ct);
        await endpoint.CreateQueueAsync("guarded", cancellationToken: Ct);
        var connection = await new AmqpConnectionFactory().OpenConnectionAsync(new Uri($"amqp://127.0.0.1:{endpoint.AmqpPort}"), TimeSpan.FromSeconds(10));
        try
        {
            var session = connection.CreateSession(new AmqpSessionSettings());
            await session.OpenAsync(TimeSpan.FromSeconds(10));
            var link = new SendingAmqpLink(session, new AmqpLinkSettings
            {
                LinkName = "no-token",
                Role = false,
                Source = new Source(),
                Target = new Target { Address = "guarded" },
                SettleType = SettleMode.SettleOnSend,
            });

            var failure = await Assert.ThrowsAsync<AmqpException>(() => link.OpenAsync(TimeSpan.FromSeconds(10)));

            Assert.Equal("amqp:unauthorized-access", failure.Error.Condition.Value);
        }
        finally
        {
            await connection.CloseAsync(TimeSpan.FromSeconds(10));
        }
    }
}
