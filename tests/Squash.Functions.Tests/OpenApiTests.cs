using System.Text.Json;

namespace Squash.Functions.Tests;

/// <summary>The served OpenAPI document and the checked-in function definitions describe the same API.</summary>
[Collection(nameof(IndexCollection))]
public sealed class OpenApiTests(IndexFixture fx)
{
    private static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Serverless.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("repository root (Serverless.sln) not found");
    }

    [Fact]
    public async Task EveryFunctionRouteIsInTheOpenApiDocumentWithItsMethodAndNothingElseIs()
    {
        using var app = fx.App(2, 1);
        using var doc = JsonDocument.Parse(await app.CreateClient().GetStringAsync("/api/openapi.json"));
        var documented = doc.RootElement.GetProperty("paths").EnumerateObject()
            .SelectMany(p => p.Value.EnumerateObject().Select(m => $"{m.Name.ToUpperInvariant()} {p.Name}"))
            .Where(x => x.Contains(" /api/", StringComparison.Ordinal) && !x.EndsWith("openapi.json", StringComparison.Ordinal))
            .Order().ToArray();

        var declared = new List<string>();
        foreach (var file in Directory.GetFiles(Path.Combine(RepoRoot(), "functions"), "function.json", SearchOption.AllDirectories))
        {
            using var f = JsonDocument.Parse(File.ReadAllText(file));
            var trigger = f.RootElement.GetProperty("bindings").EnumerateArray().Single(b => b.GetProperty("type").GetString() == "httpTrigger");
            foreach (var m in trigger.GetProperty("methods").EnumerateArray())
                declared.Add($"{m.GetString()!.ToUpperInvariant()} /api/{trigger.GetProperty("route").GetString()}");
        }
        // The document itself is a function too (so it is routed on Azure), but not a path inside itself.
        Assert.Contains("GET /api/openapi.json", declared);
        Assert.Equal(declared.Where(d => d != "GET /api/openapi.json").Order().ToArray(), documented);
        // A server URL would be the handler's loopback port behind the Functions host.
        Assert.True(!doc.RootElement.TryGetProperty("servers", out var servers) || servers.GetArrayLength() == 0, doc.RootElement.ToString());
        var query = doc.RootElement.GetProperty("paths").GetProperty("/api/indexes/{index}/query").GetProperty("post");
        Assert.True(query.GetProperty("responses").TryGetProperty("400", out _));
        Assert.True(query.TryGetProperty("requestBody", out _));
    }
}
