using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Squash.Functions.Tests;

/// <summary>
/// The JSON names clients and tree nodes rely on: the answer's stats and a /scan response's partial results. Renaming or
/// regrouping the types behind them must not change a byte of these names (member order is not part of the contract).
/// </summary>
[Collection(nameof(IndexCollection))]
public sealed class WireFormatTests(IndexFixture fx)
{
    /// <summary>Every counter of the engine's QueryStats, the plan (an uncalibrated index predicts no recall), then the tree's figures.</summary>
    private static readonly string[] UnfilteredStats =
    [
        "partitionsPlanned", "partitionsScanned", "partitionsSkippedByBound", "vectorsConsidered", "afterHamming", "afterLowerBound",
        "reranked", "bytesTouched", "strategy", "passes", "filterRejected", "filterRechecked", "filterRecheckRejected", "certified",
        "recallTarget", "centroidFactor", "rerankFactor",
        "bytesRead", "invocations", "treeNodes", "coldInstances", "warmInstances", "cacheHits", "cacheMisses", "levels", "estimatedCostUsd", "cost", "shape", "milliseconds",
    ];

    /// <summary>A filtered query also reports the planner's estimate.</summary>
    private static readonly string[] FilteredStats = [.. UnfilteredStats, "estimatedMatches"];

    private static async Task<JsonElement> Post(HttpClient client, string path, string body)
    {
        var response = await client.PostAsync(path, Bodies.Json(body));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    private static string[] Names(JsonElement e) => e.EnumerateObject().Select(p => p.Name).ToArray();

    private static void AssertNames(string[] expected, JsonElement e) => Assert.Equal(expected.Order(StringComparer.Ordinal), Names(e).Order(StringComparer.Ordinal));

    [Fact]
    public async Task AnAnswersStatsKeepTheirNamesAndOrder()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var plain = await Post(client, $"/api/indexes/{IndexFixture.IndexName}/query", "{\"vector\":" + Bodies.Vector(fx.Queries[0]) + ",\"k\":5}");
        AssertNames(UnfilteredStats, plain.GetProperty("stats"));
        AssertNames(["level", "nodes", "wallMs", "workMs", "fetchMs"], plain.GetProperty("stats").GetProperty("levels")[0]);
        AssertNames(["computeUsd", "droppedComputeUsd", "executionsUsd", "storageUsd", "totalUsd", "billedMilliseconds", "droppedAttempts",
            "droppedBilledMilliseconds", "executions", "blobReads", "blobWrites", "blobLists", "blobOther", "storageBilled"], plain.GetProperty("stats").GetProperty("cost"));
        Assert.Equal(1, plain.GetProperty("stats").GetProperty("passes").GetInt32());

        var filtered = await Post(client, $"/api/indexes/{IndexFixture.AttributedIndexName}/query",
            "{\"vector\":" + Bodies.Vector(fx.Queries[0]) + ",\"k\":5,\"filter\":{\"colour\":\"red\"}}");
        var stats = filtered.GetProperty("stats");
        AssertNames(FilteredStats, stats);
        // The estimate is reported to one decimal.
        double estimate = stats.GetProperty("estimatedMatches").GetDouble();
        Assert.Equal(Math.Round(estimate, 1), estimate);
    }

    [Fact]
    public async Task AScanResponseKeepsItsNames()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        using var info = JsonDocument.Parse(await client.GetStringAsync($"/api/indexes/{IndexFixture.AttributedIndexName}"));
        var body = new JsonObject
        {
            ["version"] = info.RootElement.GetProperty("version").GetString(),
            ["vectors"] = new JsonArray(JsonNode.Parse(Bodies.Vector(fx.Queries[0]))),
            ["k"] = 3,
            ["options"] = new JsonObject(),
            ["include"] = new JsonArray("colour"),
            ["keys"] = true,
            ["plans"] = new JsonArray(new JsonArray(Enumerable.Range(0, fx.Partitions).Select(p => (JsonNode)p).ToArray())),
            ["node"] = new JsonObject { ["id"] = 0, ["partitions"] = new JsonArray(Enumerable.Range(0, fx.Partitions).Select(p => (JsonNode)p).ToArray()), ["children"] = new JsonArray() },
        };
        var scan = await Post(client, $"/api/indexes/{IndexFixture.AttributedIndexName}/scan", body.ToJsonString());
        AssertNames(["neighbours", "stats", "skippedBounds", "missingPartitions", "invocations", "bytesRead", "coldInstances", "warmInstances",
            "cacheHits", "cacheMisses", "busyMilliseconds", "billedMilliseconds", "droppedAttempts", "droppedBilledMilliseconds", "storageOperations", "levels"], scan);
        var first = scan.GetProperty("neighbours")[0][0];
        AssertNames(["id", "d", "key", "attributes"], first);
        Assert.Equal($"doc-{first.GetProperty("id").GetInt64()}", first.GetProperty("key").GetString());
        // Node-to-node stats carry every engine counter, the recheck rejections included.
        Assert.Contains("filterRecheckRejected", Names(scan.GetProperty("stats")[0]));
    }
}
