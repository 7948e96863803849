namespace Squash.Functions.Tests;

/// <summary>How the handler reads APPLICATIONINSIGHTS_AUTHENTICATION_STRING (the setting Bicep gives every app).</summary>
public sealed class TelemetrySettingsTests
{
    [Theory]
    [InlineData("ClientId=0d1c5b2e-1111-2222-3333-444455556666;Authorization=AAD", true, "0d1c5b2e-1111-2222-3333-444455556666")]
    [InlineData("Authorization=aad; ClientId = abc ", true, "abc")]
    [InlineData("Authorization=AAD", true, null)]
    [InlineData("ClientId=abc", false, "abc")]
    [InlineData("", false, null)]
    [InlineData(null, false, null)]
    [InlineData("garbage;;=x;Authorization", false, null)]
    public void TheAuthenticationStringSaysWhetherAndAsWhichIdentity(string? setting, bool entraId, string? clientId)
    {
        Assert.Equal((entraId, clientId), Telemetry.ParseAuthentication(setting));
        Assert.Equal(entraId, Telemetry.AppInsightsCredential(setting) is Azure.Identity.ManagedIdentityCredential);
    }
}
