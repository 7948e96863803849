using System.Net;
using System.Text;
using System.Text.Json;

namespace Squash.Functions.Tests;

/// <summary>String ids, <c>include</c> and per-level timings through the invocation tree.</summary>
[Collection(nameof(IndexCollection))]
public sealed class AttributeApiTests(IndexFixture fx)
{
    private static async Task<JsonElement> Post(HttpClient client, string index, string body)
    {
        var response = await client.PostAsync($"/api/indexes/{index}/query", Bodies.Json(body));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    [Theory]
    [InlineData(2, 2)]
    [InlineData(1, 0)]
    public async Task ResultsCarryTheUsersIdsAndTheIncludedAttributesReadWhereTheRowsAre(int branching, int depth)
    {
        using var app = fx.App(branching, depth);
        var client = app.CreateClient();
        for (int q = 0; q < 20; q++)
        {
            var answer = await Post(client, IndexFixture.AttributedIndexName,
                "{\"vector\":" + Bodies.Vector(fx.Queries[q]) + ",\"k\":10,\"include\":[\"colour\",\"price\",\"tags\"]}");
            var expected = fx.AttributedEngine.Search(fx.Queries[q], new Squash.Search.SearchOptions { K = 10 });
            var results = answer.GetProperty("results").EnumerateArray().ToArray();
            Assert.Equal(expected.Ids, results.Select(r => r.GetProperty("row").GetInt64()).ToArray());
            foreach (var r in results)
            {
                long row = r.GetProperty("row").GetInt64();
                Assert.Equal($"doc-{row}", r.GetProperty("id").GetString());
                var attributes = r.GetProperty("attributes");
                Assert.Equal(IndexFixture.Colours[row % 5], attributes.GetProperty("colour").GetString());
                Assert.Equal(row % 1000 + 0.5, attributes.GetProperty("price").GetDouble());
                Assert.Equal(new[] { $"t{row % 7}", $"t{row % 3 + 7}" }.Order(), attributes.GetProperty("tags").EnumerateArray().Select(t => t.GetString()!).Order());
            }
        }
    }

    [Fact]
    public async Task WithoutIncludeThereAreNoAttributesAndAnIndexWithoutIdsAnswersRowNumbers()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var named = await Post(client, IndexFixture.AttributedIndexName, "{\"vector\":" + Bodies.Vector(fx.Queries[0]) + ",\"k\":3}");
        foreach (var r in named.GetProperty("results").EnumerateArray())
        {
            Assert.False(r.TryGetProperty("attributes", out _));
            Assert.Equal($"doc-{r.GetProperty("row").GetInt64()}", r.GetProperty("id").GetString());
        }
        var plain = await Post(client, IndexFixture.IndexName, "{\"vector\":" + Bodies.Vector(fx.Queries[0]) + ",\"k\":3}");
        foreach (var r in plain.GetProperty("results").EnumerateArray())
            Assert.Equal(r.GetProperty("row").GetInt64(), r.GetProperty("id").GetInt64());
    }

    [Fact]
    public async Task StatsReportTheTimeSpentAtEachTreeLevel()
    {
        using var app = fx.App(2, 2);
        var answer = await Post(app.CreateClient(), IndexFixture.IndexName, "{\"vector\":" + Bodies.Vector(fx.Queries[1]) + ",\"k\":10,\"options\":{\"exact\":true}}");
        var levels = answer.GetProperty("stats").GetProperty("levels").EnumerateArray().ToArray();
        // Exact mode visits all 12 partitions over 2 + 4 slots (empty subtrees are pruned): every node counted once.
        Assert.Equal([0, 1, 2], levels.Select(l => l.GetProperty("level").GetInt32()));
        var nodes = levels.Select(l => l.GetProperty("nodes").GetInt32()).ToArray();
        Assert.Equal(1, nodes[0]);
        Assert.InRange(nodes[1], 1, 2);
        Assert.InRange(nodes[2], 1, 4);
        Assert.Equal(answer.GetProperty("stats").GetProperty("treeNodes").GetInt32() + 1, nodes.Sum());
        // A parent waits for its children, so its wall time covers theirs.
        Assert.True(levels[0].GetProperty("wallMs").GetDouble() >= levels[1].GetProperty("wallMs").GetDouble());
        Assert.True(levels[1].GetProperty("wallMs").GetDouble() >= levels[2].GetProperty("wallMs").GetDouble());
        Assert.All(levels, l => Assert.True(l.GetProperty("workMs").GetDouble() <= l.GetProperty("wallMs").GetDouble() + 1e-3));
    }

    public static TheoryData<string, string, string> BadAttributeRequests => new()
    {
        { "\"include\":[\"colour\",\"size\"]", "include[1]", "the index has no attribute 'size' (it has: colour, price, tags)" },
        { "\"filter\":{\"size\":{\"$lt\":3}}", "filter.size", "unknown attribute 'size'" },
        { "\"filter\":{\"price\":{\"$lt\":\"cheap\"}}", "filter.price.$lt", "" },
        { "\"filter\":{\"$or\":{}}", "filter.$or", "" },
        { "\"filter\":[1]", "filter", "" },
    };

    [Theory]
    [MemberData(nameof(BadAttributeRequests))]
    public async Task BadIncludesAndFiltersAre400sNamingTheField(string part, string field, string message)
    {
        using var app = fx.App(2, 1);
        var response = await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.AttributedIndexName}/query",
            Bodies.Json("{\"vector\":" + Bodies.Vector(fx.Queries[0]) + "," + part + "}"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var errors = doc.RootElement.GetProperty("errors");
        Assert.True(errors.TryGetProperty(field, out var messages), doc.RootElement.GetRawText());
        if (message.Length > 0) Assert.Equal(message, messages[0].GetString());
        else Assert.False(string.IsNullOrWhiteSpace(messages[0].GetString()));
    }

    /// <summary>
    /// A filter of more than 10,000 clauses is a 400 naming <c>filter</c>: compiled on the coordinator and on every node,
    /// 100,000 of them took seconds and ~300 MB a compile, and a nested one left the answer incomplete. An $in list is one
    /// clause, however many values it holds.
    /// </summary>
    [Fact]
    public async Task AFilterOfMoreThanTenThousandClausesIs400AndALongInListIsNot()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        string Query(string filter) => "{\"vector\":" + Bodies.Vector(fx.Queries[0]) + ",\"k\":5,\"filter\":" + filter + "}";
        string Or(int terms) => "{\"$or\":[" + string.Join(",", Enumerable.Range(0, terms).Select(i => $"{{\"price\":{i}.5}}")) + "]}";

        // $or and its 9,999 terms: 10,000 clauses, the most allowed.
        var most = await client.PostAsync($"/api/indexes/{IndexFixture.AttributedIndexName}/query", Bodies.Json(Query(Or(9_999))));
        Assert.True(most.StatusCode == HttpStatusCode.OK, await most.Content.ReadAsStringAsync());

        var errors = await Problems.BadRequest(await client.PostAsync($"/api/indexes/{IndexFixture.AttributedIndexName}/query", Bodies.Json(Query(Or(10_000)))));
        Assert.Equal(["holds more than 10,000 clauses (each attribute, operator, $and, $or and $not counts once; the values of an $in list count as one): use $in for a long list of values, or split the request"],
            errors["filter"]);

        var longIn = "{\"price\":{\"$in\":[" + string.Join(",", Enumerable.Range(0, 100_000).Select(i => $"{i}.5")) + "]}}";
        var answer = await Post(client, IndexFixture.AttributedIndexName, Query(longIn));
        Assert.Equal(5, answer.GetProperty("results").GetArrayLength());
    }
}

/// <summary>Filtered queries through the invocation tree: the same passes, the same answer as the in-process engine.</summary>
[Collection(nameof(IndexCollection))]
public sealed class FilterApiTests(IndexFixture fx)
{
    private static readonly string[] Filters =
    [
        "{\"colour\":\"red\"}",
        "{\"colour\":{\"$in\":[\"blue\",\"white\"]},\"price\":{\"$lt\":400}}",
        "{\"price\":{\"$gte\":100,\"$lt\":130}}",
        "{\"$or\":[{\"tags\":\"t1\"},{\"price\":{\"$gt\":990}}]}",
        "{\"$not\":{\"colour\":{\"$in\":[\"red\",\"green\",\"blue\"]}},\"tags\":{\"$nin\":[\"t8\"]}}",
        "{\"price\":{\"$eq\":999.5}}",
        "{\"price\":{\"$lt\":3}}",
        "{\"price\":{\"$lt\":0}}",
    ];

    [Theory]
    [InlineData(2, 2, false)]
    [InlineData(3, 1, true)]
    [InlineData(1, 0, false)]
    public async Task FilteredAnswersThroughTheTreeEqualTheInProcessEngine(int branching, int depth, bool exact)
    {
        using var app = fx.App(branching, depth);
        var client = app.CreateClient();
        var index = fx.AttributedEngine.Index;
        for (int q = 0; q < 48; q++)
        {
            string filter = Filters[q % Filters.Length];
            var response = await client.PostAsync($"/api/indexes/{IndexFixture.AttributedIndexName}/query",
                Bodies.Json("{\"vector\":" + Bodies.Vector(fx.Queries[q]) + ",\"k\":10,\"filter\":" + filter + ",\"include\":[\"colour\",\"price\",\"tags\"],\"options\":{\"exact\":" + (exact ? "true" : "false") + "}}"));
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, text);
            var answer = JsonDocument.Parse(text).RootElement;
            var expected = fx.AttributedEngine.Search(fx.Queries[q], new Squash.Search.SearchOptions { K = 10, Exact = exact, Filter = index.Filters.Compile(filter) });
            var results = answer.GetProperty("results").EnumerateArray().ToArray();
            Assert.Equal(expected.Ids, results.Select(r => r.GetProperty("row").GetInt64()).ToArray());
            Assert.Equal(expected.Distances, results.Select(r => r.GetProperty("distance").GetSingle()).ToArray());
            Assert.True(answer.GetProperty("complete").GetBoolean());
            var stats = answer.GetProperty("stats");
            Assert.Equal(expected.Stats.Strategy, stats.GetProperty("strategy").GetString());
            Assert.Equal(expected.Stats.Passes, stats.GetProperty("passes").GetInt32());
            // Every result satisfies the filter, judged on the attributes the API returned.
            var compiled = index.Filters.Compile(filter);
            foreach (var r in results)
            {
                long row = r.GetProperty("row").GetInt64();
                var a = r.GetProperty("attributes");
                Assert.Equal(IndexFixture.Colours[row % 5], a.GetProperty("colour").GetString());
                Assert.Equal(row % 1000 + 0.5, a.GetProperty("price").GetDouble());
            }
            // Count guarantee: min(k, matches) results.
            int matches = Enumerable.Range(0, IndexFixture.Count).Count(i => Matches(filter, i));
            Assert.Equal(Math.Min(10, matches), results.Length);
            Assert.All(results, r => Assert.True(Matches(filter, (int)r.GetProperty("row").GetInt64()), $"row {r.GetProperty("row")} violates {filter}"));
        }
    }

    /// <summary>The fixture's attributes, evaluated independently of the engine (the brute-force predicate).</summary>
    private static bool Matches(string filter, int i)
    {
        string colour = IndexFixture.Colours[i % 5];
        double price = i % 1000 + 0.5;
        var tags = new[] { $"t{i % 7}", $"t{i % 3 + 7}" };
        return filter switch
        {
            "{\"colour\":\"red\"}" => colour == "red",
            "{\"colour\":{\"$in\":[\"blue\",\"white\"]},\"price\":{\"$lt\":400}}" => colour is "blue" or "white" && price < 400,
            "{\"price\":{\"$gte\":100,\"$lt\":130}}" => price is >= 100 and < 130,
            "{\"$or\":[{\"tags\":\"t1\"},{\"price\":{\"$gt\":990}}]}" => tags.Contains("t1") || price > 990,
            "{\"$not\":{\"colour\":{\"$in\":[\"red\",\"green\",\"blue\"]}},\"tags\":{\"$nin\":[\"t8\"]}}" => colour is not ("red" or "green" or "blue") && !tags.Contains("t8"),
            "{\"price\":{\"$eq\":999.5}}" => price == 999.5,
            "{\"price\":{\"$lt\":3}}" => price < 3,
            "{\"price\":{\"$lt\":0}}" => false,
            _ => throw new ArgumentException(filter),
        };
    }
}
