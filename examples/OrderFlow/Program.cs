// Order flow: order placed -> payment -> shipping. Runs on the in-memory transport by default;
// switch broker with configuration only, e.g.  dotnet run --project examples/OrderFlow -- --Messaging:Transport=RabbitMQ  (or PubSub, SnsSqs, ServiceBus)
// Metrics are served for Prometheus on http://localhost:9464/metrics (OrderFlow:PrometheusPort; 0 turns it off).
// --OrderFlow:Continuous=true keeps placing orders until Ctrl+C, so a Prometheus and Grafana pair has something to show.
// Orders live in an SQLite database beside the program (orderflow.db in the build output; Messaging:Outbox:FilePath moves it),
// created at start-up: each order, the events it publishes (outbox) and the record that a handler handled an event (inbox)
// commit in one transaction.
using Messaging.Aws;
using Messaging.Diagnostics;
using Messaging.Health;
using Messaging.PubSub;
using Messaging.RabbitMQ;
using Messaging.ServiceBus;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
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
    .AddSubscription("shipping", "payments", s => s.Handle<PaymentCompleted, ShippingHandler>())
    .AddOutbox(o => o.UseSqlite(Path.Combine(AppContext.BaseDirectory, "orderflow.db")));

builder.Services.AddHealthChecks().AddMessagingHealthChecks();
builder.Services.AddSingleton<FlowTracker>();
builder.Services.AddSingleton<OrderStore>();
builder.Services.AddHostedService(sp => sp.GetRequiredService<OrderStore>());
builder.Services.Configure<OrderFlowOptions>(builder.Configuration.GetSection(OrderFlowOptions.SectionName));
builder.Services.AddHostedService<OrderSimulator>();

// Every metric of the library (throughput, processing time, failures, dead letters, backlog) for Prometheus to scrape.
var flow = builder.Configuration.GetSection(OrderFlowOptions.SectionName).Get<OrderFlowOptions>() ?? new OrderFlowOptions();
if (flow.PrometheusPort > 0)
{
    builder.Services.AddOpenTelemetry()
        .ConfigureResource(resource => resource.AddService("order-flow"))
        .WithMetrics(metrics => metrics
            .AddMeter(MessagingDiagnostics.SourceName)
            .AddPrometheusHttpListener(o => o.Port = flow.PrometheusPort));
}

await builder.Build().RunAsync();
