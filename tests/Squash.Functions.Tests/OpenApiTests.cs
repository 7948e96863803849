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
        var optional = new List<(string Method, string Without, string With)>();
        foreach (var file in Directory.GetFiles(Path.Combine(RepoRoot(), "functions"), "function.json", SearchOption.AllDirectories))
        {
            using var f = JsonDocument.Parse(File.ReadAllText(file));
            // Queue-triggered functions (the build stages) have no route: the host calls them by name.
            var trigger = f.RootElement.GetProperty("bindings").EnumerateArray().SingleOrDefault(b => b.GetProperty("type").GetString() == "httpTrigger");
            if (trigger.ValueKind == JsonValueKind.Undefined) continue;
            var route = "/api/" + trigger.GetProperty("route").GetString();
            foreach (var m in trigger.GetProperty("methods").EnumerateArray())
            {
                var method = m.GetString()!.ToUpperInvariant();
                // An optional last parameter ({buildId?}) is one function serving two paths: each method on at least one.
                if (route.EndsWith("?}", StringComparison.Ordinal))
                    optional.Add((method, route[..route.LastIndexOf("/{", StringComparison.Ordinal)], route.Replace("?}", "}", StringComparison.Ordinal)));
                else declared.Add($"{method} {route}");
            }
        }
        // The document itself is a function too (so it is routed on Azure), but not a path inside itself.
        Assert.Contains("GET /api/openapi.json", declared);
        var allowed = declared.Concat(optional.SelectMany(o => new[] { $"{o.Method} {o.Without}", $"{o.Method} {o.With}" })).ToHashSet();
        Assert.All(documented, d => Assert.Contains(d, allowed));
        Assert.All(declared.Where(d => d != "GET /api/openapi.json"), d => Assert.Contains(d, documented));
        Assert.All(optional, o => Assert.True(documented.Contains($"{o.Method} {o.Without}") || documented.Contains($"{o.Method} {o.With}"), $"{o.Method} {o.With}"));
        // A server URL would be the handler's loopback port behind the Functions host.
        Assert.True(!doc.RootElement.TryGetProperty("servers", out var servers) || servers.GetArrayLength() == 0, doc.RootElement.ToString());
        var query = doc.RootElement.GetProperty("paths").GetProperty("/api/indexes/{index}/query").GetProperty("post");
        Assert.True(query.GetProperty("responses").TryGetProperty("400", out _));
        Assert.True(query.TryGetProperty("requestBody", out _));
    }
}
