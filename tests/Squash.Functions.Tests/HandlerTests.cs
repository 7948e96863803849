using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Squash.Search;
using Microsoft.Extensions.DependencyInjection;

namespace Squash.Functions.Tests;

[Collection(nameof(IndexCollection))]
public sealed class HandlerTests(IndexFixture fx)
{
    [Fact]
    public async Task HealthAndRootAnswer()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        Assert.Equal("""{"status":"ok"}""", await client.GetStringAsync("/api/health"));
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/")).StatusCode);
    }

    [Fact]
    public async Task IndexInfoDescribesTheIndexAndAnUnknownIndexIs404ProblemJson()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        using var info = JsonDocument.Parse(await client.GetStringAsync($"/api/indexes/{IndexFixture.IndexName}"));
        Assert.Equal(IndexFixture.Dims, info.RootElement.GetProperty("dimensions").GetInt32());
        Assert.Equal(IndexFixture.Count, info.RootElement.GetProperty("count").GetInt64());
        Assert.Equal("l2", info.RootElement.GetProperty("metric").GetString());
        Assert.Matches("^v[0-9]{8}-[0-9]{9}-[0-9a-f]{12}$", info.RootElement.GetProperty("version").GetString());

        var missing = await client.GetAsync("/api/indexes/nope");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Equal("application/problem+json", missing.Content.Headers.ContentType?.MediaType);
        using var problem = JsonDocument.Parse(await missing.Content.ReadAsStringAsync());
        Assert.Equal("no index named 'nope' is published", problem.RootElement.GetProperty("detail").GetString());
    }

    public static TheoryData<string, string, string> BadRequests => new()
    {
        { """{"k":5}""", "vector", "a query needs 'vector' (one query) or 'vectors' (a batch)" },
        { """{"vector":[1,2,3]}""", "vector", "has 3 dimensions; the index has 24" },
        { "{\"vector\":" + Bodies.Vector(new float[24]) + ",\"k\":0}", "k", "k must be between 1 and 10000, got 0" },
        { "{\"vector\":" + Bodies.Vector(new float[24]) + ",\"k\":10001}", "k", "k must be between 1 and 10000, got 10001" },
        { "{\"vector\":" + Bodies.Vector(new float[24]) + ",\"options\":{\"centroidFactor\":0.5}}", "options.centroidFactor", "must be a number between 1 and 1000, got 0.5" },
        { "{\"vectors\":[]}", "vectors", "the batch is empty" },
    };

    [Theory]
    [MemberData(nameof(BadRequests))]
    public async Task InvalidQueriesAre400ProblemJsonNamingTheField(string body, string field, string message)
    {
        using var app = fx.App(2, 1);
        var response = await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Bodies.Json(body));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal(400, problem.RootElement.GetProperty("status").GetInt32());
        var messages = problem.RootElement.GetProperty("errors").GetProperty(field).EnumerateArray().Select(e => e.GetString()).ToArray();
        Assert.Contains(message, messages);
    }

    [Theory]
    [InlineData("{\"vector\": [1, 2,", "vector[2]")]
    [InlineData("[1, 2]", "body")]
    [InlineData("{\"vector\": \"abc\"}", "vector")]
    [InlineData("{\"namespace\": \"x\"}", "namespace")]
    public async Task MalformedJsonAndUnknownFieldsNameThePath(string body, string field)
    {
        using var app = fx.App(2, 1);
        var response = await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Bodies.Json(body));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        using var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.True(problem.RootElement.GetProperty("errors").TryGetProperty(field, out _), await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task BadIndexNamesAndOversizedBodiesAreRejected()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var bad = await client.PostAsync("/api/indexes/Bad_Name/query", Bodies.Json("{}"));
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        var huge = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Bodies.Json("{\"vector\":[" + string.Join(',', Enumerable.Repeat("0", 3_000_000)) + "]}"));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, huge.StatusCode);
    }

    /// <summary>The Functions host forwards the original request with its own headers (enableForwardingHttpRequest).</summary>
    [Fact]
    public async Task AForwardedRequestFromTheFunctionsHostIsAnswered()
    {
        using var app = fx.App(2, 1);
        var request = new HttpRequestMessage(HttpMethod.Post, $"/api/indexes/{IndexFixture.IndexName}/query")
        {
            Content = Bodies.Json("{\"vector\":" + Bodies.Vector(fx.Queries[0]) + ",\"k\":3}"),
        };
        request.Headers.Add("X-Azure-Functions-InvocationId", Guid.NewGuid().ToString());
        request.Headers.Add("X-Azure-Functions-HostVersion", "4.1040.300.25317");
        request.Headers.UserAgent.ParseAdd("Azure-Functions-Host/4.1040.300.25317");
        var response = await app.CreateClient().SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var answer = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal(3, answer.RootElement.GetProperty("results").GetArrayLength());
    }
}

[Collection(nameof(IndexCollection))]
public sealed class PreloadTests(IndexFixture fx)
{
    [Fact]
    public async Task PreloadedIndexesOpenAtStartUpWithoutAQueryAndAMissingOneDoesNotStopTheApp()
    {
        using var app = fx.App(2, 1, settings: new Dictionary<string, string> { ["Squash:Preload"] = $"{IndexFixture.IndexName}, no-such-index" });
        var client = app.CreateClient();
        var catalog = app.Services.GetRequiredService<IndexCatalog>();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!catalog.IsOpen(IndexFixture.IndexName) && DateTime.UtcNow < deadline) await Task.Delay(20);
        Assert.True(catalog.IsOpen(IndexFixture.IndexName));
        Assert.False(catalog.IsOpen(IndexFixture.AttributedIndexName));
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/api/health")).StatusCode);
    }
}
