using System.Net;
using System.Text;
using Azure;

namespace Squash.Functions.Tests;

/// <summary>
/// Every bad request the README's HTTP API section lists, sent as written there, with the status and error body it
/// documents. A change to either side must change both.
/// </summary>
[Collection(nameof(IndexCollection))]
public sealed class ReadmeBadInputTests(IndexFixture fx)
{
    private string V => Bodies.Vector(fx.Queries[0]);

    [Fact]
    public async Task EveryDocumentedBadRequestGetsItsDocumentedAnswer()
    {
        ScriptedStore? store = null;
        using var app = fx.App(2, 1, wrapStore: inner => store = new ScriptedStore(inner));
        var client = app.CreateClient();
        string query = $"/api/indexes/{IndexFixture.IndexName}/query", attrs = $"/api/indexes/{IndexFixture.AttributedIndexName}/query";

        async Task<Dictionary<string, string[]>> Bad(string path, string body) => await Problems.BadRequest(await client.PostAsync(path, Bodies.Json(body)));

        // First, while nothing is open yet: a store that cannot be read is a 503, a damaged manifest a 500; both name the index.
        store!.Fails = name => name.EndsWith("manifest.json", StringComparison.Ordinal) ? new RequestFailedException(503, "injected") : null;
        var unreadable = await Problems.Read(await client.PostAsync(attrs, Bodies.Json("{\"vector\":" + V + "}")), HttpStatusCode.ServiceUnavailable);
        Assert.Contains($"'{IndexFixture.AttributedIndexName}'", unreadable.GetProperty("detail").GetString());
        store.Fails = _ => null;
        store.Replaces = name => name.EndsWith("manifest.json", StringComparison.Ordinal) ? Encoding.UTF8.GetBytes("[]") : null;
        var damaged = await Problems.Read(await client.PostAsync(attrs, Bodies.Json("{\"vector\":" + V + "}")), HttpStatusCode.InternalServerError);
        Assert.Contains($"'{IndexFixture.AttributedIndexName}' is damaged", damaged.GetProperty("detail").GetString());
        store.Replaces = _ => null;

        // The example in the README, exactly.
        var k = await Problems.Read(await client.PostAsync(query, Bodies.Json("{\"vector\":" + V + ",\"k\":0}")), HttpStatusCode.BadRequest);
        Assert.Equal("""{"k":["k must be between 1 and 10000, got 0"]}""", k.GetProperty("errors").GetRawText());

        // Each option outside its documented range, and a tree over Squash__MaxTreeNodes.
        Assert.Equal(["must be a number between 1 and 1000, got 1001"], (await Bad(query, "{\"vector\":" + V + ",\"options\":{\"centroidFactor\":1001}}"))["options.centroidFactor"]);
        Assert.Equal(["must be in (0, 100], got 0"], (await Bad(query, "{\"vector\":" + V + ",\"options\":{\"hammingKeepPercent\":0}}"))["options.hammingKeepPercent"]);
        Assert.Equal(["must be between 1 and 1000, got 1001"], (await Bad(query, "{\"vector\":" + V + ",\"options\":{\"rerankFactor\":1001}}"))["options.rerankFactor"]);
        Assert.Equal(["must be between 1 and 16, got 17"], (await Bad(query, "{\"vector\":" + V + ",\"options\":{\"branching\":17}}"))["options.branching"]);
        Assert.Equal(["must be between 0 and 4, got 5"], (await Bad(query, "{\"vector\":" + V + ",\"options\":{\"depth\":5}}"))["options.depth"]);
        var tree = await Bad(query, "{\"vector\":" + V + ",\"options\":{\"branching\":16,\"depth\":4}}");
        Assert.Equal(["options.branching", "options.depth"], tree.Keys.Order());

        // A string where a number belongs, and every unknown field.
        Assert.Equal(["must be a whole number, got the string \"5\""], (await Bad(query, "{\"vector\":" + V + ",\"k\":\"5\"}"))["k"]);
        Assert.Equal(["namespace", "topK"], (await Bad(query, "{\"vector\":" + V + ",\"topK\":5,\"namespace\":\"x\"}")).Keys.Order(StringComparer.Ordinal));

        // Filter errors under filter plus the JSON path.
        Assert.Contains("filter.price.$lt", (await Bad(attrs, "{\"vector\":" + V + ",\"filter\":{\"price\":{\"$lt\":\"cheap\"}}}")).Keys);

        // A batch over 256.
        var batch = "{\"vectors\":[" + string.Join(',', Enumerable.Repeat(V, 257)) + "]}";
        Assert.Equal(["a batch holds at most 256 vectors, got 257"], (await Bad(query, batch))["vectors"]);

        // A body over 4 MB.
        await Problems.Read(await client.PostAsync(query, Bodies.Json("{\"vector\":[" + string.Join(',', Enumerable.Repeat("0", 3_000_000)) + "]}")), HttpStatusCode.RequestEntityTooLarge);

        // An unknown index, to the query and the info endpoint, and an unknown version to /scan.
        await Problems.Read(await client.PostAsync("/api/indexes/nope/query", Bodies.Json("{\"vector\":" + V + "}")), HttpStatusCode.NotFound);
        await Problems.Read(await client.GetAsync("/api/indexes/nope"), HttpStatusCode.NotFound);
        var scan = "{\"version\":\"v999999\",\"vectors\":[" + V + "],\"k\":5,\"options\":{},\"plans\":[[0]],\"node\":{\"id\":0,\"partitions\":[0],\"children\":[]}}";
        await Problems.Read(await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/scan", Bodies.Json(scan)), HttpStatusCode.NotFound);
        // A /scan body is checked like a query's.
        using var info = System.Text.Json.JsonDocument.Parse(await client.GetStringAsync($"/api/indexes/{IndexFixture.IndexName}"));
        var version = info.RootElement.GetProperty("version").GetString()!;
        Assert.Equal(["k must be between 1 and 10000, got 0"], (await Bad($"/api/indexes/{IndexFixture.IndexName}/scan", scan.Replace("\"k\":5", "\"k\":0").Replace("v999999", version)))["k"]);

    }
}
