using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Http.Metadata;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Squash.LocalHost;
using Squash.Testing;

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

    /// <summary>
    /// Every route the app maps under /api/ is in the document (with its method) and has a function.json, unless it is
    /// marked as left out of the description: a route mapped without either would work under `squash serve` and not on Azure.
    /// </summary>
    [Fact]
    public async Task EveryApiRouteTheAppMapsIsInTheOpenApiDocument()
    {
        using var app = fx.App(2, 1);
        using var doc = JsonDocument.Parse(await app.CreateClient().GetStringAsync("/api/openapi.json"));
        var documented = doc.RootElement.GetProperty("paths").EnumerateObject()
            .SelectMany(p => p.Value.EnumerateObject().Select(m => $"{m.Name.ToUpperInvariant()} {p.Name}")).ToHashSet();
        var mapped = app.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>()
            .Where(e => e.Metadata.GetMetadata<IExcludeFromDescriptionMetadata>() is not { ExcludeFromDescription: true })
            .Select(e => (Path: "/" + e.RoutePattern.RawText!.TrimStart('/'), Methods: e.Metadata.GetMetadata<IHttpMethodMetadata>()?.HttpMethods ?? []))
            .Where(e => e.Path.StartsWith("/api/", StringComparison.Ordinal) && e.Path != "/api/openapi.json")
            .SelectMany(e => e.Methods.Select(m => $"{m} {e.Path}")).ToArray();
        Assert.NotEmpty(mapped);
        Assert.All(mapped, route => Assert.Contains(route, documented));
    }

    /// <summary>
    /// The document as the app serves it from its own process (what `squash serve` and Azure run): reflection-based JSON
    /// is off there (Native AOT), so every type an endpoint describes must come from a source-generated context. The
    /// in-process tests run with reflection on, and did not see the 500 that the builds API's missing context caused.
    /// </summary>
    [Fact]
    public async Task TheAppServesTheDocumentFromItsOwnProcess()
    {
        var host = new LocalFunctionHost(new LocalHostOptions { Store = "dir:" + fx.Root, Port = FreePorts.Next(), Depth = 0, ProcessorPools = 1, MaxInstancesPerPool = 1 });
        await using (host)
        {
            await host.StartAsync().WaitAsync(TimeSpan.FromSeconds(60));
            using var client = new HttpClient { BaseAddress = host.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
            using var response = await client.GetAsync("/api/openapi.json");
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, $"HTTP {(int)response.StatusCode}: {body}");
            using var doc = JsonDocument.Parse(body);
            var paths = doc.RootElement.GetProperty("paths");
            foreach (var path in new[] { "/api/indexes/{index}/query", "/api/indexes/{index}/builds", "/api/indexes/{index}/vectors", "/api/indexes/{index}" })
                Assert.True(paths.TryGetProperty(path, out _), $"{path} is not in the served document");
        }
    }

    /// <summary>
    /// The document's schemas are the wire's: every model has exactly the fields its serializer reads or writes, numbers are
    /// numbers (the API answers "k":"5" with a 400, so the document must not offer strings), an upsert's vector may be
    /// base64 text, a result's id a string or a number, the query's 200 is an answer or a batch of them, the write and
    /// build submissions take an Idempotency-Key, and the write answers the 500 a damaged index gives.
    /// </summary>
    [Fact]
    public async Task TheDocumentsSchemasAreTheWireModels()
    {
        using var app = fx.App(2, 1);
        using var doc = JsonDocument.Parse(await app.CreateClient().GetStringAsync("/api/openapi.json"));
        var root = doc.RootElement;
        var schemas = root.GetProperty("components").GetProperty("schemas");
        var models = new System.Text.Json.Serialization.Metadata.JsonTypeInfo[]
        {
            Api.ApiJson.Default.QueryRequest, Api.ApiJson.Default.GetTypeInfo(typeof(Api.QueryOptions))!, Api.ApiJson.Default.QueryAnswer,
            Api.ApiJson.Default.BatchAnswer, Api.ApiJson.Default.GetTypeInfo(typeof(Api.Hit))!, Api.ApiJson.Default.GetTypeInfo(typeof(Api.AnswerStats))!,
            Api.ApiJson.Default.QueryCost, Api.ApiJson.Default.IndexInfo, Api.ApiJson.Default.RebuildInfo,
            Squash.Functions.Writes.WriteApiJson.Default.WriteRequest, Squash.Functions.Writes.WriteApiJson.Default.GetTypeInfo(typeof(Squash.Functions.Writes.UpsertRequest))!, Squash.Functions.Writes.WriteApiJson.Default.WriteAccepted,
            Squash.Functions.Builds.BuildApiJson.Default.BuildRequest, Squash.Functions.Builds.BuildApiJson.Default.GetTypeInfo(typeof(Squash.Functions.Builds.BuildSourceRequest))!,
            Squash.Functions.Builds.BuildApiJson.Default.GetTypeInfo(typeof(Squash.Functions.Builds.BuildOptionsRequest))!, Squash.Functions.Builds.BuildApiJson.Default.BuildAccepted,
            Squash.Functions.Builds.BuildApiJson.Default.BuildView, Squash.Functions.Builds.BuildApiJson.Default.BuildList,
            Squash.Functions.Builds.BuildApiJson.Default.GetTypeInfo(typeof(Squash.Functions.Builds.DamagedBuild))!,
        };
        foreach (var model in models)
        {
            var name = model.Type.Name;
            Assert.True(schemas.TryGetProperty(name, out var schema), $"no schema {name}");
            var documented = schema.GetProperty("properties").EnumerateObject().Select(p => p.Name).Order().ToArray();
            Assert.Equal(model.Properties.Where(p => p.Get is not null || p.Set is not null).Select(p => p.Name).Order().ToArray(), documented);
        }
        // No number anywhere in the document is offered as a string.
        var offeredAsStrings = new List<string>();
        void Walk(JsonElement e, string at)
        {
            if (e.ValueKind == JsonValueKind.Object)
            {
                if (e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.Array)
                {
                    var types = t.EnumerateArray().Select(x => x.GetString()).ToHashSet();
                    if (types.Contains("string") && (types.Contains("integer") || types.Contains("number")) && !at.EndsWith("UpsertRequest.properties.vector", StringComparison.Ordinal)
                        && !at.EndsWith("Hit.properties.id", StringComparison.Ordinal))
                        offeredAsStrings.Add(at);
                }
                foreach (var p in e.EnumerateObject()) Walk(p.Value, $"{at}.{p.Name}");
            }
            else if (e.ValueKind == JsonValueKind.Array)
                foreach (var item in e.EnumerateArray()) Walk(item, at + "[]");
        }
        Walk(root, "$");
        Assert.True(offeredAsStrings.Count == 0, "numbers offered as strings at: " + string.Join(", ", offeredAsStrings.Take(10)));

        // An upsert's vector, a query's and each of a query's batch may be an array of numbers or base64 text.
        var queryProperties = schemas.GetProperty("QueryRequest").GetProperty("properties");
        foreach (var vector in new[] { schemas.GetProperty("UpsertRequest").GetProperty("properties").GetProperty("vector"), queryProperties.GetProperty("vector"),
            queryProperties.GetProperty("vectors").GetProperty("items") })
        {
            Assert.Contains("string", vector.GetProperty("type").EnumerateArray().Select(x => x.GetString()));
            Assert.Contains("array", vector.GetProperty("type").EnumerateArray().Select(x => x.GetString()));
            Assert.Equal("number", vector.GetProperty("items").GetProperty("type").GetString());
        }
        var id = schemas.GetProperty("Hit").GetProperty("properties").GetProperty("id");
        Assert.Equal(["integer", "string"], id.GetProperty("type").EnumerateArray().Select(x => x.GetString()!).Order().ToArray());

        var paths = root.GetProperty("paths");
        var queryOk = paths.GetProperty("/api/indexes/{index}/query").GetProperty("post").GetProperty("responses").GetProperty("200")
            .GetProperty("content").GetProperty("application/json").GetProperty("schema");
        Assert.Equal(["#/components/schemas/BatchAnswer", "#/components/schemas/QueryAnswer"],
            queryOk.GetProperty("oneOf").EnumerateArray().Select(s => s.GetProperty("$ref").GetString()!).Order().ToArray());
        foreach (var (path, method) in new[] { ("/api/indexes/{index}/vectors", "post"), ("/api/indexes/{index}/builds", "post") })
            Assert.Contains(paths.GetProperty(path).GetProperty(method).GetProperty("parameters").EnumerateArray(),
                p => p.GetProperty("name").GetString() == "Idempotency-Key" && p.GetProperty("in").GetString() == "header");
        Assert.True(paths.GetProperty("/api/indexes/{index}/vectors").GetProperty("post").GetProperty("responses").TryGetProperty("500", out _));
    }

    /// <summary>
    /// The document's ranges, lengths and defaults are the validators' own constants (and the app's settings: MaxBatch,
    /// the tree shape), and what it puts one past a maximum the API refuses with a 400 naming the field.
    /// </summary>
    [Fact]
    public async Task TheDocumentsRangesAndDefaultsAreTheValidatorsOwn()
    {
        using var app = fx.App(3, 1, settings: new Dictionary<string, string> { ["Squash:MaxBatch"] = "5" });
        var client = app.CreateClient();
        using var doc = JsonDocument.Parse(await client.GetStringAsync("/api/openapi.json"));
        var schemas = doc.RootElement.GetProperty("components").GetProperty("schemas");
        JsonElement Field(string schema, string name) => schemas.GetProperty(schema).GetProperty("properties").GetProperty(name);
        double Number(JsonElement field, string keyword) => field.GetProperty(keyword).GetDouble();

        var k = Field("QueryRequest", "k");
        Assert.Equal((1.0, Search.SearchOptions.MaxK, Search.SearchOptions.DefaultK), (Number(k, "minimum"), Number(k, "maximum"), Number(k, "default")));
        var vectors = Field("QueryRequest", "vectors");
        Assert.Equal((1, 5), (vectors.GetProperty("minItems").GetInt32(), vectors.GetProperty("maxItems").GetInt32()));
        // The internal /scan's k is required (no default), with the query's range; its batch the query's bound.
        var scanK = Field("ScanRequest", "k");
        Assert.Equal((1.0, Search.SearchOptions.MaxK), (Number(scanK, "minimum"), Number(scanK, "maximum")));
        Assert.False(scanK.TryGetProperty("default", out _));
        var scanVectors = Field("ScanRequest", "vectors");
        Assert.Equal((1, 5), (scanVectors.GetProperty("minItems").GetInt32(), scanVectors.GetProperty("maxItems").GetInt32()));
        var recall = Field("QueryOptions", "recall");
        Assert.Equal((0.0, 1.0, Search.SearchOptions.DefaultRecall), (Number(recall, "exclusiveMinimum"), Number(recall, "maximum"), Number(recall, "default")));
        Assert.Equal(Search.SearchOptions.MaxCentroidFactor, Number(Field("QueryOptions", "centroidFactor"), "maximum"));
        Assert.Equal(Search.SearchOptions.MaxRerankFactor, Number(Field("QueryOptions", "rerankFactor"), "maximum"));
        var maxPartitions = Field("QueryOptions", "maxPartitions");
        Assert.Equal(1.0, Number(maxPartitions, "minimum"));
        Assert.False(maxPartitions.TryGetProperty("default", out _), "no cap unless one is given");
        Assert.Equal(Search.SearchOptions.MaxHammingKeepPercent, Number(Field("QueryOptions", "hammingKeepPercent"), "maximum"));
        var branching = Field("QueryOptions", "branching");
        Assert.Equal((Api.RequestMapping.MaxBranching, 3.0), (Number(branching, "maximum"), Number(branching, "default")));
        var depth = Field("QueryOptions", "depth");
        Assert.Equal((0.0, Api.RequestMapping.MaxDepth, 1.0), (Number(depth, "minimum"), Number(depth, "maximum"), Number(depth, "default")));
        Assert.Equal(["eventual", "strong", "null"], Field("QueryOptions", "consistency").GetProperty("enum").EnumerateArray().Select(e => e.GetString() ?? "null").ToArray());
        Assert.Equal(Writes.WriteValidation.MaxItems, Field("WriteRequest", "upserts").GetProperty("maxItems").GetInt32());
        Assert.Equal(Writes.WriteValidation.MaxIdLength, Field("UpsertRequest", "id").GetProperty("maxLength").GetInt32());
        var maxBits = Field("BuildOptionsRequest", "maxBits");
        Assert.Equal((Squash.Core.Quantization.BitAllocation.MaxBitsPerDimension, Squash.Functions.Builds.BuildSubmission.Defaults.MaxBits),
            (maxBits.GetProperty("maximum").GetInt32(), maxBits.GetProperty("default").GetInt32()));
        Assert.Equal(Squash.Functions.Builds.BuildSubmission.Defaults.Energy, Number(Field("BuildOptionsRequest", "energy"), "default"));
        Assert.Equal(Squash.Functions.Builds.BuildSubmission.MaxCalibrationFilters, Field("BuildSourceRequest", "calibrationFilters").GetProperty("maxItems").GetInt32());
        var key = doc.RootElement.GetProperty("paths").GetProperty("/api/indexes/{index}/vectors").GetProperty("post").GetProperty("parameters").EnumerateArray()
            .Single(p => p.GetProperty("name").GetString() == "Idempotency-Key").GetProperty("schema");
        Assert.Equal(Squash.Functions.Builds.BuildEndpoints.MaxIdempotencyKey, key.GetProperty("maxLength").GetInt32());

        // One past each maximum the document states is a 400 naming the field.
        var vector = Bodies.Vector(fx.Queries[1]);
        async Task<Dictionary<string, string[]>> Query(string fields) =>
            await Problems.BadRequest(await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Bodies.Json(fields)));
        string Past(JsonElement field) => (Number(field, "maximum") + 1).ToString(System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(["k"], (await Query($"{{\"vector\":{vector},\"k\":{Past(k)}}}")).Keys);
        foreach (var option in new[] { "recall", "centroidFactor", "rerankFactor", "hammingKeepPercent", "branching", "depth" })
            Assert.Equal([$"options.{option}"], (await Query($"{{\"vector\":{vector},\"options\":{{\"{option}\":{Past(Field("QueryOptions", option))}}}}}")).Keys);
        var batch = string.Join(',', Enumerable.Repeat(vector, vectors.GetProperty("maxItems").GetInt32() + 1));
        Assert.Equal(["vectors"], (await Query($"{{\"vectors\":[{batch}]}}")).Keys);
        using (var info = JsonDocument.Parse(await client.GetStringAsync($"/api/indexes/{IndexFixture.IndexName}")))
        {
            var version = info.RootElement.GetProperty("version").GetString();
            async Task<Dictionary<string, string[]>> Scan(string vectorsJson, string k) => await Problems.BadRequest(await client.PostAsync(
                $"/api/indexes/{IndexFixture.IndexName}/scan", Bodies.Json($"{{\"version\":\"{version}\",\"vectors\":[{vectorsJson}],\"k\":{k},\"options\":{{}},"
                    + "\"plans\":[[0]],\"node\":{\"id\":0,\"partitions\":[0],\"children\":[]}}")));
            Assert.Equal(["k"], (await Scan(vector, Past(scanK))).Keys);
            Assert.Contains("vectors", (await Scan(string.Join(',', Enumerable.Repeat(vector, scanVectors.GetProperty("maxItems").GetInt32() + 1)), "5")).Keys);
        }
        using var write = new HttpRequestMessage(HttpMethod.Post, $"/api/indexes/{IndexFixture.IndexName}/vectors") { Content = Bodies.Json("{\"deletes\":[\"a\"]}") };
        write.Headers.Add("Idempotency-Key", new string('k', key.GetProperty("maxLength").GetInt32() + 1));
        Assert.Equal(["Idempotency-Key"], (await Problems.BadRequest(await client.SendAsync(write))).Keys);
    }

    /// <summary>Every {index} path parameter states the name rule the endpoints check, and a name outside it is a 400 naming 'index'.</summary>
    [Fact]
    public async Task EveryIndexParameterGivesTheNameRuleTheEndpointsCheck()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        using var doc = JsonDocument.Parse(await client.GetStringAsync("/api/openapi.json"));
        var indexParameters = doc.RootElement.GetProperty("paths").EnumerateObject()
            .SelectMany(p => p.Value.EnumerateObject().Where(m => m.Value.TryGetProperty("parameters", out _))
                .SelectMany(m => m.Value.GetProperty("parameters").EnumerateArray().Select(x => (At: $"{m.Name} {p.Name}", Parameter: x))))
            .Where(x => x.Parameter.GetProperty("name").GetString() == "index" && x.Parameter.GetProperty("in").GetString() == "path").ToArray();
        var operationsOnAnIndex = doc.RootElement.GetProperty("paths").EnumerateObject().Where(p => p.Name.Contains("{index}", StringComparison.Ordinal))
            .Sum(p => p.Value.EnumerateObject().Count());
        Assert.True(operationsOnAnIndex > 0 && indexParameters.Length == operationsOnAnIndex, string.Join(", ", indexParameters.Select(x => x.At)));
        Assert.All(indexParameters, x => Assert.True(
            x.Parameter.GetProperty("schema").TryGetProperty("pattern", out var pattern) && pattern.GetString() == Squash.Functions.IndexCatalog.NamePatternText, x.At));
        // One past the longest name the pattern allows.
        var tooLong = new string('a', 64);
        Assert.DoesNotMatch(Squash.Functions.IndexCatalog.NamePatternText, tooLong);
        Assert.Equal([$"'{tooLong}' is not a valid index name (lower-case letters, digits and '-', at most 63)"],
            (await Problems.BadRequest(await client.GetAsync($"/api/indexes/{tooLong}")))["index"]);
    }
}
