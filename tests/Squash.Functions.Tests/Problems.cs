using System.Net;
using System.Text.Json;

namespace Squash.Functions.Tests;

/// <summary>Reads an RFC 7807 answer and checks what every error answer must be.</summary>
internal static class Problems
{
    public static async Task<JsonElement> Read(HttpResponseMessage response, HttpStatusCode status)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == status, $"expected {(int)status}, got {(int)response.StatusCode}: {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        // Errors speak JSON and HTTP: no .NET type names, no stack frames.
        Assert.DoesNotContain("Squash.", text);
        Assert.DoesNotContain("System.", text);
        Assert.DoesNotContain("   at ", text);
        using var doc = JsonDocument.Parse(text);
        Assert.Equal((int)status, doc.RootElement.GetProperty("status").GetInt32());
        return doc.RootElement.Clone();
    }

    /// <summary>The messages of a validation problem, by field.</summary>
    public static Dictionary<string, string[]> Errors(JsonElement problem) =>
        problem.GetProperty("errors").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.EnumerateArray().Select(m => m.GetString()!).ToArray());

    public static async Task<Dictionary<string, string[]>> BadRequest(HttpResponseMessage response) =>
        Errors(await Read(response, HttpStatusCode.BadRequest));
}
