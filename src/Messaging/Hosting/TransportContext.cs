using CloudNative.CloudEvents;
using Microsoft.Extensions.Logging;

namespace Messaging.Hosting;

/// <summary>What the contract layer hands a transport when it creates it.</summary>
public sealed record TransportContext(IReadOnlyList<CloudEventAttribute> ExtensionAttributes, ILoggerFactory LoggerFactory, TimeProvider TimeProvider);
