using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;

namespace Squash.Functions.Tests;

/// <summary>The internal tree-node endpoint is reachable over HTTP like any other: it checks its body as strictly as /query.</summary>
[Collection(nameof(IndexCollection))]
public sealed class ScanEndpointTests(IndexFixture fx)
{
    private static async Task<string> VersionOf(HttpClient client, string index)
    {
        using var info = JsonDocument.Parse(await client.GetStringAsync($"/api/indexes/{index}"));
        return info.RootElement.GetProperty("version").GetString()!;
    }

    /// <summary>What a coordinator sends: one query, the whole plan on one node without children.</summary>
    private JsonObject ValidScan(string version) => new()
    {
        ["version"] = version,
        ["vectors"] = new JsonArray(JsonNode.Parse(Bodies.Vector(fx.Queries[0]))),
        ["k"] = 5,
        ["options"] = new JsonObject(),
        ["plans"] = new JsonArray(new JsonArray(0, 1, 2, 3)),
        ["node"] = new JsonObject { ["id"] = 0, ["partitions"] = new JsonArray(0, 1, 2, 3), ["children"] = new JsonArray() },
    };

    private static Task<HttpResponseMessage> Scan(HttpClient client, string index, JsonNode body) =>
        client.PostAsync($"/api/indexes/{index}/scan", Bodies.Json(body.ToJsonString()));

    [Fact]
    public async Task AValidScanIsAnswered()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var response = await Scan(client, IndexFixture.IndexName, ValidScan(await VersionOf(client, IndexFixture.IndexName)));
        Assert.True(response.StatusCode == HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task AnUnknownIndexOrVersionIs404AndLeavesNothingInTheCatalog()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var catalog = app.Services.GetRequiredService<IndexCatalog>();
        var version = await VersionOf(client, IndexFixture.IndexName);

        var noIndex = await Problems.Read(await Scan(client, "no-such-index", ValidScan(version)), HttpStatusCode.NotFound);
        Assert.Equal($"index 'no-such-index' has no version '{version}'", noIndex.GetProperty("detail").GetString());
        Assert.False(catalog.IsOpen("no-such-index"));

        var body = ValidScan("v999999");
        var noVersion = await Problems.Read(await Scan(client, IndexFixture.AttributedIndexName, body), HttpStatusCode.NotFound);
        Assert.Equal($"index '{IndexFixture.AttributedIndexName}' has no version 'v999999'", noVersion.GetProperty("detail").GetString());
        Assert.False(catalog.IsOpen(IndexFixture.AttributedIndexName));
    }

    public static TheoryData<string, string, string> BadScans => new()
    {
        { "version", "\"../../etc\"", "must be a version id such as v20261203-121530123-3f9a1c0b7e2d (or v000042), got '../../etc'" },
        { "k", "0", "k must be between 1 and 10000, got 0" },
        { "k", "\"5\"", "must be a whole number, got the string \"5\"" },
        { "vectors", "[]", "the batch is empty" },
        { "vectors", "[[1,2,3]]", "has 3 dimensions; the index has 24" },
        { "options", "{\"rerankFactor\":2147483647}", "must be between 1 and 1000, got 2147483647" },
        { "options", "{\"recall\":0.9}", "is not taken by a scan node: send the plan's centroidFactor and rerankFactor" },
        { "options", "{\"maxPartitions\":3}", "is not taken by a scan node: the coordinator plans which partitions each node scans" },
        { "plans", "[]", "needs one plan per vector (1), got 0" },
        { "plans", "[[0,99]]", "partition numbers must be between 0 and {last}, got 99" },
        { "plans", "[[0,1,1]]", "lists partition 1 twice" },
        { "node", "{\"id\":0,\"partitions\":[2,2],\"children\":[]}", "lists partition 2 twice" },
        { "node", "{\"id\":0,\"partitions\":[0,1,2,3],\"children\":[{\"id\":1,\"partitions\":[3],\"children\":[]}]}", "partition 3 is also another node's" },
        { "strategies", "[\"Sideways\"]", "must be \"Partitions\" or \"Direct\"" },
        { "rerankFactors", "[2,2]", "needs one re-rank factor per vector (1), got 2" },
        { "rerankFactors", "[0]", "must be between 1 and 1,000" },
        { "exactPlans", "[]", "needs one entry per vector (1), got 0" },
        { "node", "{\"id\":0,\"partitions\":[-1],\"children\":[]}", "partition numbers must be between 0 and {last}, got -1" },
        { "node", "{\"id\":0,\"partitions\":[],\"children\":[{\"id\":-5,\"partitions\":[],\"children\":[]}]}", "must be a tree slot between 0 and 127, got -5" },
        { "node", "{\"id\":0,\"partitions\":[]}", "is required" },
        { "node", "null", "is required" },
        { "version", "null", "must be a version id such as v20261203-121530123-3f9a1c0b7e2d (or v000042), got null" },
        { "excludedRows", "\"###\"", "is not base64url text" },
        { "excludedRows", "\"gA\"", "ends inside the varint that starts at byte 0" },
        { "excludedRows", "\"gICAgICAgICAgAE\"", "holds a varint past 64 bits at byte 0" },
        { "excludedRows", "\"__________9_AA\"", "holds a row number past 9223372036854775807 (row 1)" },
    };

    [Theory]
    [MemberData(nameof(BadScans))]
    public async Task AMalformedScanIs400NamingTheField(string field, string value, string message)
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var body = ValidScan(await VersionOf(client, IndexFixture.IndexName));
        body[field] = JsonNode.Parse(value);
        var errors = await Problems.BadRequest(await Scan(client, IndexFixture.IndexName, body));
        message = message.Replace("{last}", (fx.Partitions - 1).ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal);
        Assert.Contains(message, errors.Where(e => e.Key.StartsWith(field, StringComparison.Ordinal)).SelectMany(e => e.Value));
    }

    [Fact]
    public async Task ExcludedRowsAreLeftOutOfTheAnswer()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var body = ValidScan(await VersionOf(client, IndexFixture.IndexName));
        body["options"] = new JsonObject { ["exact"] = true };
        var all = await Ids(await Scan(client, IndexFixture.IndexName, body));
        Assert.Equal(5, all.Length);

        // The best and the third: an exact scan then answers the others in the same order, and more behind them.
        body["excludedRows"] = Squash.Search.Writes.RowNumberCodec.Encode([.. new[] { all[0], all[2] }.Order()]);
        var rest = await Ids(await Scan(client, IndexFixture.IndexName, body));
        Assert.Equal([all[1], all[3], all[4]], rest[..3]);
        Assert.DoesNotContain(all[0], rest);
        Assert.DoesNotContain(all[2], rest);

        static async Task<long[]> Ids(HttpResponseMessage response)
        {
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, text);
            using var doc = JsonDocument.Parse(text);
            return doc.RootElement.GetProperty("neighbours")[0].EnumerateArray().Select(n => n.GetProperty("id").GetInt64()).ToArray();
        }
    }

    /// <summary>
    /// A node holds the excluded rows decoded, so it takes at most Squash:MaxMaskedRows of them (the coordinator never sends
    /// more): more is a 400 naming excludedRows, decoded no further than the bound.
    /// </summary>
    [Fact]
    public async Task ANodeRefusesMoreExcludedRowsThanItsBound()
    {
        using var app = fx.App(2, 1, settings: new Dictionary<string, string> { ["Squash:MaxMaskedRows"] = "2" });
        var client = app.CreateClient();
        var body = ValidScan(await VersionOf(client, IndexFixture.IndexName));
        body["excludedRows"] = Squash.Search.Writes.RowNumberCodec.Encode([1, 2]);
        var response = await Scan(client, IndexFixture.IndexName, body);
        Assert.True(response.StatusCode == HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
        body["excludedRows"] = Squash.Search.Writes.RowNumberCodec.Encode([7, 8, 9]);
        var errors = await Problems.BadRequest(await Scan(client, IndexFixture.IndexName, body));
        Assert.Equal(["holds more than 2 rows"], errors["excludedRows"]);
    }

    [Fact]
    public async Task MissingFieldsAreEachNamed()
    {
        using var app = fx.App(2, 1);
        var errors = await Problems.BadRequest(await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.IndexName}/scan", Bodies.Json("{\"k\":5}")));
        Assert.Equal(["node", "options", "plans", "vectors", "version"], errors.Keys.Order(StringComparer.Ordinal));
        Assert.All(errors.Values, m => Assert.Equal(["is required"], m));
    }

    [Fact]
    public async Task AFilterNeedsAStrategyPerVectorAndMustCompile()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var body = ValidScan(await VersionOf(client, IndexFixture.AttributedIndexName));
        body["filter"] = JsonNode.Parse("{\"colour\":\"red\"}");
        var errors = await Problems.BadRequest(await Scan(client, IndexFixture.AttributedIndexName, body));
        Assert.Equal(["is required with a filter (one per vector)"], errors["strategies"]);

        body["strategies"] = new JsonArray("Partitions");
        body["filter"] = JsonNode.Parse("{\"weight\":{\"$lt\":3}}");
        errors = await Problems.BadRequest(await Scan(client, IndexFixture.AttributedIndexName, body));
        Assert.Contains(errors.Keys, k => k.StartsWith("filter", StringComparison.Ordinal));
    }

    /// <summary>
    /// A request compiles its filter once: the check that answers a bad one with a 400 hands the compiled filter on to the
    /// scan (near 20,003 clauses a compile is most of a cold node's work), on /scan and on a query the coordinator scans alone.
    /// </summary>
    [Fact]
    public async Task AFilterIsCompiledOncePerRequest()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var version = await VersionOf(client, IndexFixture.AttributedIndexName);
        var loaded = (await app.Services.GetRequiredService<IndexCatalog>().OpenAsync(IndexFixture.AttributedIndexName, version, CancellationToken.None))!;
        var body = ValidScan(version);
        body["filter"] = JsonNode.Parse("{\"colour\":\"red\",\"price\":{\"$lt\":500}}");
        body["strategies"] = new JsonArray("Partitions");
        body["include"] = new JsonArray("colour");
        long before = loaded.Filters.Compilations;
        var scan = await Scan(client, IndexFixture.AttributedIndexName, body);
        var text = await scan.Content.ReadAsStringAsync();
        Assert.True(scan.StatusCode == HttpStatusCode.OK, text);
        Assert.Equal(1, loaded.Filters.Compilations - before);
        Assert.Contains("\"red\"", text);
        Assert.DoesNotContain("\"blue\"", text);

        before = loaded.Filters.Compilations;
        var query = await client.PostAsync($"/api/indexes/{IndexFixture.AttributedIndexName}/query", Bodies.Json(
            "{\"vector\":" + Bodies.Vector(fx.Queries[0]) + ",\"k\":5,\"filter\":{\"colour\":\"red\"},\"options\":{\"depth\":0}}"));
        Assert.True(query.StatusCode == HttpStatusCode.OK, await query.Content.ReadAsStringAsync());
        Assert.Equal(1, loaded.Filters.Compilations - before);
    }

    /// <summary>
    /// A scan node's filter is bounded by what a coordinator sends: the query's filter (10,000 clauses at most) joined to a
    /// strong read's tail deleteWheres (10,000 at most; more are sent as excluded rows) by $and, $not and $or, 20,003 in all.
    /// Unbounded, a body of 100,000 numeric clauses cost the node ~2.3 KB a clause to compile, on every node of the tree.
    /// </summary>
    [Fact]
    public async Task AScanFilterOfMoreClausesThanACoordinatorSendsIs400NamingTheFilter()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var body = ValidScan(await VersionOf(client, IndexFixture.AttributedIndexName));
        body["strategies"] = new JsonArray("Partitions");
        // {"$and":[{"$or":[…query…]},{"$not":{"$or":[…tail…]}}]}: the query's $or and its terms, the tail's deleteWheres
        // (here one clause each) and $and, $not, $or around them.
        static JsonNode Filter(int queryTerms, int tailTerms) => JsonNode.Parse(
            "{\"$and\":[{\"$or\":[" + string.Join(",", Enumerable.Range(0, queryTerms).Select(i => $"{{\"price\":{i}.25}}"))
            + "]},{\"$not\":{\"$or\":[" + string.Join(",", Enumerable.Range(0, tailTerms).Select(i => $"{{\"price\":{i + 5000}.75}}"))
            + "]}}]}", documentOptions: new JsonDocumentOptions { MaxDepth = 64 })!;

        body["filter"] = Filter(9_999, 10_000);
        var most = await Scan(client, IndexFixture.AttributedIndexName, body);
        Assert.True(most.StatusCode == HttpStatusCode.OK, await most.Content.ReadAsStringAsync());

        body["filter"] = Filter(9_999, 10_001);
        var errors = await Problems.BadRequest(await Scan(client, IndexFixture.AttributedIndexName, body));
        Assert.Equal(["holds more than 20,003 clauses (each attribute, operator, $and, $or and $not counts once; the values of an $in list count as one): use $in for a long list of values, or split the request"],
            errors["filter"]);
    }

    [Fact]
    public async Task ATreeLargerThanTheAppAllowsIs400()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var body = ValidScan(await VersionOf(client, IndexFixture.IndexName));
        // 200 leaves under one node: more than the 128 scan nodes the app allows.
        var leaves = new JsonArray(Enumerable.Range(0, 200).Select(i => (JsonNode?)new JsonObject { ["id"] = i % 100, ["partitions"] = new JsonArray(), ["children"] = new JsonArray() }).ToArray());
        body["node"] = new JsonObject { ["id"] = -1, ["partitions"] = new JsonArray(), ["children"] = leaves };
        var errors = await Problems.BadRequest(await Scan(client, IndexFixture.IndexName, body));
        Assert.Equal(["describes more than 129 nodes; at most 129 (the coordinator and 128 scan nodes) are allowed"], errors["node"]);
    }

    /// <summary>
    /// A chain of nodes, one under the other: as few nodes as a legal tree, but every level is a hop whose wait the level
    /// above hedges, so a deep chain multiplied its invocations (29 nodes on `squash serve` after a recycle: ~600
    /// invocations and 13 s). A tree is at most 4 levels below the node that receives it, as a query's depth.
    /// </summary>
    [Fact]
    public async Task ATreeDeeperThanAQueryMayAskForIs400NamingTheNode()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var body = ValidScan(await VersionOf(client, IndexFixture.IndexName));
        JsonObject Chain(int levels)
        {
            var node = new JsonObject { ["id"] = levels, ["partitions"] = new JsonArray(), ["children"] = new JsonArray() };
            for (int level = levels - 1; level >= 1; level--)
                node = new JsonObject { ["id"] = level, ["partitions"] = new JsonArray(), ["children"] = new JsonArray(node) };
            return new JsonObject { ["id"] = -1, ["partitions"] = new JsonArray(0, 1, 2, 3), ["children"] = new JsonArray(node) };
        }

        body["node"] = Chain(4);
        var legal = await Scan(client, IndexFixture.IndexName, body);
        Assert.True(legal.StatusCode == HttpStatusCode.OK, await legal.Content.ReadAsStringAsync());

        body["node"] = Chain(20);
        var errors = await Problems.BadRequest(await Scan(client, IndexFixture.IndexName, body));
        var deepest = "node" + string.Concat(Enumerable.Repeat(".children[0]", 5));
        Assert.Equal([deepest], errors.Keys);
        Assert.Equal(["lies 5 levels below the node that receives the request; a tree has at most 4 (options.depth)"], errors[deepest]);
    }
}
