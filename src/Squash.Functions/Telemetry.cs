using System.Diagnostics;

namespace Squash.Functions;

/// <summary>The function app's trace source (OpenTelemetry listens to it).</summary>
public static class Telemetry
{
    public const string SourceName = "Squash.Functions";
    public static readonly ActivitySource Source = new(SourceName);
}
