using System.Text;
using System.Text.Json;
using Squash.Search;

namespace Squash.Functions.Tests;

/// <summary>
/// <c>options.recall</c> through the invocation tree: the coordinator turns the target (0.95 when the request sets
/// no plan) into the calibrated CF and R, the scan nodes scan with that plan, and the answer and its stats equal the
/// in-process engine's for the same target.
/// </summary>
[Collection(nameof(IndexCollection))]
public sealed class RecallTargetApiTests(IndexFixture fx)
{
    private static StringContent Body(object o) => new(JsonSerializer.Serialize(o), Encoding.UTF8, "application/json");

    // An exact plan's CF and R are left out of the stats.
    private static double? OptionalDouble(JsonElement stats, string name) => stats.TryGetProperty(name, out var v) ? v.GetDouble() : null;
    private static int? OptionalInt(JsonElement stats, string name) => stats.TryGetProperty(name, out var v) ? v.GetInt32() : null;

    [Theory]
    [InlineData(2, 2)]
    [InlineData(1, 0)]
    public async Task TheTreeAnswersATargetWithThePlanTheEngineChooses(int branching, int depth)
    {
        using var app = fx.App(branching, depth);
        var client = app.CreateClient();
        Assert.NotNull(fx.CalibratedEngine.Index.Manifest.Calibration);
        foreach (double? target in new double?[] { null, 0.9, 0.99, 1 })
        {
            foreach (var q in fx.Queries.Take(25))
            {
                object body = target is { } t ? new { vector = q, k = 10, options = new { recall = t } } : new { vector = q, k = 10 };
                var response = await client.PostAsync($"/api/indexes/{IndexFixture.CalibratedIndexName}/query", Body(body));
                var text = await response.Content.ReadAsStringAsync();
                Assert.True(response.IsSuccessStatusCode, text);
                using var doc = JsonDocument.Parse(text);
                var stats = doc.RootElement.GetProperty("stats");
                var expected = fx.CalibratedEngine.Search(q, new SearchOptions { K = 10, Recall = target ?? SearchOptions.DefaultRecall });
                Assert.Equal(expected.Ids, doc.RootElement.GetProperty("results").EnumerateArray().Select(e => e.GetProperty("row").GetInt64()));
                Assert.Equal(target ?? SearchOptions.DefaultRecall, stats.GetProperty("recallTarget").GetDouble());
                Assert.Equal(expected.Stats.PredictedRecall, stats.GetProperty("predictedRecall").GetDouble());
                // An exact plan's prediction (1) is not a recall@K measured; a calibrated plan's is recall@10 here.
                Assert.Equal(target == 1 ? null : 10, OptionalInt(stats, "predictedAtK"));
                Assert.Equal(expected.Stats.CentroidFactor, OptionalDouble(stats, "centroidFactor"));
                Assert.Equal(expected.Stats.RerankFactor, OptionalInt(stats, "rerankFactor"));
                // A calibrated plan's partition cap (none on this small index; QueryValidationTests sends one by hand) is the
                // coordinator's: the tree plans the partitions the engine does.
                Assert.Equal(expected.Stats.MaxPartitions, OptionalInt(stats, "maxPartitions"));
                Assert.Equal(expected.Stats.PartitionsPlanned, stats.GetProperty("partitionsPlanned").GetInt32());
                Assert.Equal(expected.Stats.Certified, stats.GetProperty("certified").GetBoolean());
                if (target == 1)
                {
                    Assert.True(expected.Stats.Certified, "an exact target is certified");
                    Assert.Null(expected.Stats.CentroidFactor);
                }
            }
        }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(30, 50)]
    [InlineData(100, 100)]
    [InlineData(500, 100)]
    public async Task AQueryForKNeighboursRunsThePlanCalibratedAtTheSmallestKThatReachesIt(int k, int calibratedAt)
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        Assert.Equal(calibratedAt, RecallPlanner.CalibratedK(fx.CalibratedEngine.Index.Manifest.Calibration!, k));
        foreach (var q in fx.Queries.Take(10))
        {
            var response = await client.PostAsync($"/api/indexes/{IndexFixture.CalibratedIndexName}/query", Body(new { vector = q, k, options = new { recall = 0.9 } }));
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.IsSuccessStatusCode, text);
            using var doc = JsonDocument.Parse(text);
            var stats = doc.RootElement.GetProperty("stats");
            var expected = fx.CalibratedEngine.Search(q, new SearchOptions { K = k, Recall = 0.9 });
            Assert.Equal(calibratedAt, expected.Stats.PredictedAtK);
            Assert.Equal(calibratedAt, OptionalInt(stats, "predictedAtK"));
            Assert.Equal((expected.Stats.CentroidFactor, expected.Stats.RerankFactor, expected.Stats.PredictedRecall),
                (OptionalDouble(stats, "centroidFactor"), OptionalInt(stats, "rerankFactor"), stats.GetProperty("predictedRecall").GetDouble()));
            Assert.Equal(expected.Ids, doc.RootElement.GetProperty("results").EnumerateArray().Select(e => e.GetProperty("row").GetInt64()));
        }
    }

    [Fact]
    public async Task ABatchWhoseQueriesRunDifferentPlansOfAMixGetsEachQuerysPlan()
    {
        // Targets met by mixing two plans send each query of one batch through its own plan: the nodes must re-rank each
        // with its own R (one request, one tree). The coordinator alone (depth 0) scans as the engine does, so even the count
        // of re-ranked rows, which follows R, must match.
        using var app = fx.App(1, 0);
        var client = app.CreateClient();
        var batch = fx.Queries.Take(60).ToArray();
        bool anyMixedBatch = false;
        foreach (double target in new[] { 0.9, 0.95, 0.99 })
        {
            var response = await client.PostAsync($"/api/indexes/{IndexFixture.CalibratedIndexName}/query",
                Body(new { vectors = batch, k = 10, options = new { recall = target } }));
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.IsSuccessStatusCode, text);
            using var doc = JsonDocument.Parse(text);
            var answers = doc.RootElement.GetProperty("answers").EnumerateArray().ToArray();
            var rerank = new HashSet<int?>();
            for (int i = 0; i < batch.Length; i++)
            {
                var expected = fx.CalibratedEngine.Search(batch[i], new SearchOptions { K = 10, Recall = target });
                var stats = answers[i].GetProperty("stats");
                Assert.Equal(expected.Ids, answers[i].GetProperty("results").EnumerateArray().Select(e => e.GetProperty("row").GetInt64()));
                Assert.Equal((expected.Stats.CentroidFactor, expected.Stats.RerankFactor, expected.Stats.PredictedRecall),
                    (OptionalDouble(stats, "centroidFactor"), OptionalInt(stats, "rerankFactor"), stats.GetProperty("predictedRecall").GetDouble()));
                Assert.Equal(expected.Stats.PlanShare, stats.TryGetProperty("planShare", out var share) ? share.GetDouble() : null);
                Assert.Equal(expected.Stats.Reranked, stats.GetProperty("reranked").GetInt64());
                rerank.Add(expected.Stats.RerankFactor);
            }
            anyMixedBatch |= rerank.Count > 1;
        }
        Assert.True(anyMixedBatch, "no target mixed plans of different R on this index: the test proves nothing");
    }

    [Theory]
    [InlineData(2, 1)]
    [InlineData(1, 0)]
    public async Task AnExactQueryReportsNoTargetAndNoPlanButAPlannedOneDoes(int branching, int depth)
    {
        // "exact" ignores the default target and any CF and R: the stats say what ran, an exact scan, certified.
        using var app = fx.App(branching, depth);
        var client = app.CreateClient();
        foreach (var options in new object[] { new { exact = true }, new { exact = true, recall = 0.9 } })
        {
            var response = await client.PostAsync($"/api/indexes/{IndexFixture.CalibratedIndexName}/query",
                Body(new { vector = fx.Queries[0], k = 10, options }));
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.IsSuccessStatusCode, text);
            using var doc = JsonDocument.Parse(text);
            var stats = doc.RootElement.GetProperty("stats");
            var truth = fx.CalibratedEngine.Search(fx.Queries[0], new SearchOptions { K = 10, Exact = true });
            Assert.Equal(truth.Ids, doc.RootElement.GetProperty("results").EnumerateArray().Select(e => e.GetProperty("row").GetInt64()));
            Assert.False(stats.TryGetProperty("recallTarget", out _), $"an exact query has no recall target: {stats}");
            Assert.False(stats.TryGetProperty("centroidFactor", out _), $"an exact query runs no CF: {stats}");
            Assert.False(stats.TryGetProperty("rerankFactor", out _), $"an exact query runs no R: {stats}");
            Assert.True(stats.GetProperty("certified").GetBoolean(), stats.ToString());
            Assert.Equal(1, stats.GetProperty("predictedRecall").GetDouble());
        }

        // A filtered exact query plans apart (PlanFiltered) and reports the same, on an index without calibration too.
        var filtered = await client.PostAsync($"/api/indexes/{IndexFixture.AttributedIndexName}/query",
            Body(new { vector = fx.Queries[0], k = 10, filter = new { colour = "red" }, options = new { exact = true } }));
        var filteredText = await filtered.Content.ReadAsStringAsync();
        Assert.True(filtered.IsSuccessStatusCode, filteredText);
        using (var doc = JsonDocument.Parse(filteredText))
        {
            var stats = doc.RootElement.GetProperty("stats");
            Assert.Equal(10, doc.RootElement.GetProperty("results").GetArrayLength());
            foreach (var name in new[] { "recallTarget", "centroidFactor", "rerankFactor", "filterMargin" })
                Assert.False(stats.TryGetProperty(name, out _), $"a filtered exact query reports no {name}: {stats}");
            Assert.True(stats.GetProperty("certified").GetBoolean(), stats.ToString());
        }

        // The same query planned for the default target still reports the target and the plan it ran.
        var planned = await client.PostAsync($"/api/indexes/{IndexFixture.CalibratedIndexName}/query", Body(new { vector = fx.Queries[0], k = 10 }));
        using var plannedDoc = JsonDocument.Parse(await planned.Content.ReadAsStringAsync());
        var plannedStats = plannedDoc.RootElement.GetProperty("stats");
        var expected = fx.CalibratedEngine.Search(fx.Queries[0], new SearchOptions { K = 10, Recall = SearchOptions.DefaultRecall });
        Assert.NotNull(expected.Stats.CentroidFactor);
        Assert.Equal(SearchOptions.DefaultRecall, plannedStats.GetProperty("recallTarget").GetDouble());
        Assert.Equal((expected.Stats.CentroidFactor, expected.Stats.RerankFactor),
            (plannedStats.GetProperty("centroidFactor").GetDouble(), plannedStats.GetProperty("rerankFactor").GetInt32()));
    }

    [Fact]
    public async Task AGivenPlanIsUsedAsItIsAndReportsNoTarget()
    {
        using var app = fx.App(2, 1);
        var response = await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.CalibratedIndexName}/query",
            Body(new { vector = fx.Queries[0], k = 10, options = new { rerankFactor = 3 } }));
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var stats = doc.RootElement.GetProperty("stats");
        Assert.False(stats.TryGetProperty("recallTarget", out _), "a request that sets the plan has no target");
        Assert.False(stats.TryGetProperty("predictedRecall", out _), "a plan set by hand has no calibrated prediction");
        Assert.Equal((new SearchOptions().CentroidFactor, 3), (stats.GetProperty("centroidFactor").GetDouble(), stats.GetProperty("rerankFactor").GetInt32()));
    }
}
