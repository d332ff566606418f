namespace OrderFlow;

/// <summary>Settings of the example itself (<c>OrderFlow</c> section).</summary>
public sealed class OrderFlowOptions
{
    public const string SectionName = "OrderFlow";

    /// <summary>The port of the Prometheus scrape endpoint, <c>http://localhost:{port}/metrics</c>; 0 turns it off.</summary>
    public int PrometheusPort { get; set; } = 9464;

    /// <summary>Keep placing orders until the process is stopped, instead of four orders and exit.</summary>
    public bool Continuous { get; set; }

    /// <summary>Time between two orders in continuous mode.</summary>
    public TimeSpan OrderInterval { get; set; } = TimeSpan.FromMilliseconds(200);
}
