using System.Diagnostics;

namespace Squash.Functions;

/// <summary>The function app's trace source (OpenTelemetry listens to it).</summary>
public static class Telemetry
{
    public const string SourceName = "Squash.Functions";
    public static readonly ActivitySource Source = new(SourceName);

    /// <summary>
    /// The managed identity that sends telemetry to Application Insights, from APPLICATIONINSIGHTS_AUTHENTICATION_STRING
    /// (<c>Authorization=AAD</c>, optionally <c>ClientId=…</c> for a user-assigned identity), as the Functions host reads
    /// it: null when the setting does not ask for Entra ID (the connection string's key is then used).
    /// </summary>
    public static Azure.Core.TokenCredential? AppInsightsCredential(string? authentication)
    {
        var (entraId, clientId) = ParseAuthentication(authentication);
        return !entraId ? null
            : clientId is null ? new Azure.Identity.ManagedIdentityCredential(Azure.Identity.ManagedIdentityId.SystemAssigned)
            : new Azure.Identity.ManagedIdentityCredential(Azure.Identity.ManagedIdentityId.FromUserAssignedClientId(clientId));
    }

    /// <summary>Reads <c>Authorization=AAD;ClientId=…</c> (either order, any case; unknown parts ignored).</summary>
    public static (bool EntraId, string? ClientId) ParseAuthentication(string? authentication)
    {
        bool entraId = false;
        string? clientId = null;
        foreach (var part in (authentication ?? "").Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var (key, value) = part.IndexOf('=') is int eq and > 0 ? (part[..eq].Trim(), part[(eq + 1)..].Trim()) : (part, "");
            if (key.Equals("Authorization", StringComparison.OrdinalIgnoreCase)) entraId = value.Equals("AAD", StringComparison.OrdinalIgnoreCase);
            else if (key.Equals("ClientId", StringComparison.OrdinalIgnoreCase) && value.Length > 0) clientId = value;
        }
        return (entraId, clientId);
    }
}
