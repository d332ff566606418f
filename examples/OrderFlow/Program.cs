// Order flow: order placed -> payment -> shipping. Runs on the in-memory transport by default;
// switch broker with configuration only, e.g.  dotnet run --project examples/OrderFlow -- --Messaging:Transport=RabbitMQ  (or PubSub, SnsSqs, ServiceBus)
using Messaging.Aws;
using Messaging.Health;
using Messaging.PubSub;
using Messaging.RabbitMQ;
using Messaging.ServiceBus;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OrderFlow;

// Content root = the build output, so appsettings.json is found whatever the working directory is.
var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = args, ContentRootPath = AppContext.BaseDirectory });
builder.Logging.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss.fff "; });

builder.Services.AddMessaging(builder.Configuration)
    .AddRabbitMq()
    .AddPubSub()
    .AddSnsSqs()
    .AddServiceBus()
    .MapEvent<OrderPlaced>("orders", "com.example.order.placed")
    .MapEvent<PaymentCompleted>("payments", "com.example.payment.completed")
    .AddSubscription("payments", "orders", s => s.Handle<OrderPlaced, PaymentHandler>())
    .AddSubscription("shipping", "payments", s => s.Handle<PaymentCompleted, ShippingHandler>());

builder.Services.AddHealthChecks().AddMessagingHealthChecks();
builder.Services.AddSingleton<FlowTracker>();
builder.Services.AddHostedService<OrderSimulator>();

await builder.Build().RunAsync();
