using Squash.Index.Build;
using Squash.Search.Filters;

namespace Squash.Search.Tests.Filters;

/// <summary>
/// The recall calibration plans a filtered query's whole CF grid in one walk (<see cref="SearchEngine.PlanFiltered(SearchEngine.FilteredAnchors, SearchOptions, IReadOnlyList{double})"/>):
/// every plan of it, and every later pass, must be the one <see cref="SearchEngine.Plan"/> gives for that CF alone.
/// </summary>
public class GridPlanTests
{
    private const int N = 4000, Dims = 16, K = 10;

    [Fact]
    public void EveryGridPlanAndItsPassesEqualThePlanForItsCentroidFactorAlone()
    {
        var data = TestData.Clustered(N, Dims, clusters: 6, seed: 31);
        var table = FilterTestData.Table(N, 17, out _);
        using var idx = new TestData.TempIndex(data, N, Dims, new IndexBuildOptions { Partitions = 40, Seed = 9, Attributes = table });
        var engine = idx.Engine;
        var compiler = new FilterCompiler(idx.Index.Manifest.Attributes);
        var filterRng = new Random(4242);
        int[] widths = [1, 5, 40, 400, 1500];
        var filters = Enumerable.Range(0, 12).Select(_ => FilterTestData.Nested(filterRng, 2))
            .Concat(Enumerable.Range(0, 12).Select(_ =>
            {
                int lo = filterRng.Next(-1000, 1000);
                return $"{{\"qty\":{{\"$gte\":{lo},\"$lt\":{lo + widths[filterRng.Next(widths.Length)]}}}}}";
            }))
            .Append("{\"qty\":{\"$gte\":5000}}") // no partition can match: "none"
            .ToArray();
        var grid = RecallCalibrator.CentroidFactors;
        var strategies = new HashSet<string>();
        var rng = new Random(5);
        for (int qi = 0; qi < 8; qi++)
        {
            var q = data.AsSpan(qi * 211 * Dims, Dims).ToArray();
            for (int j = 0; j < Dims; j++) q[j] += (float)(TestData.Gaussian(rng) * 0.3);
            var ctx = new QueryContext(idx.Index, q);
            var (order, dist) = engine.RankPartitions(ctx);
            foreach (string json in filters)
            {
                var filter = compiler.Compile(json);
                if (filter.MatchesAll) continue;
                // Ranked as the engine ranks it: by value key where the filter has one (the colour equalities here).
                var keyed = engine.ValueOrder(ctx.Internal, order, dist, filter);
                var anchors = SearchEngine.FilteredAnchors.Of(idx.Index.Manifest, keyed?.Order ?? order, dist, FilterEstimates.Of(filter, idx.Index.Manifest), K, keyed?.Keys);
                foreach (int r in RecallCalibrator.RerankFactors)
                    foreach (var strategy in new[] { FilterStrategy.Auto, FilterStrategy.Partitions })
                    {
                        var options = new SearchOptions { K = K, RerankFactor = r, Filter = filter, FilterStrategy = strategy };
                        var plans = engine.PlanFiltered(anchors, options, grid);
                        Assert.Equal(grid.Length, plans.Length);
                        for (int g = 0; g < grid.Length; g++)
                        {
                            string what = $"query {qi}, filter {json}, R {r}, {strategy}, CF {grid[g]}";
                            var alone = engine.Plan(ctx, options with { CentroidFactor = grid[g] });
                            AssertSamePlan(engine, alone, plans[g], what);
                            strategies.Add(alone.Strategy);
                        }
                    }
            }
        }
        // The data must reach all three outcomes, or the test proves less than it says.
        Assert.Equal(["direct", "none", "partitions"], strategies.Order());
    }

    [Fact]
    public void ExactModeAndTheArgumentsAreChecked()
    {
        var data = TestData.Clustered(1000, Dims, clusters: 3, seed: 2);
        var table = FilterTestData.Table(1000, 3, out _);
        using var idx = new TestData.TempIndex(data, 1000, Dims, new IndexBuildOptions { Partitions = 10, Seed = 1, Attributes = table });
        var engine = idx.Engine;
        var filter = new FilterCompiler(idx.Index.Manifest.Attributes).Compile("{\"qty\":{\"$gte\":-500,\"$lt\":500}}");
        var ctx = new QueryContext(idx.Index, data.AsSpan(0, Dims));
        var (order, dist) = engine.RankPartitions(ctx);
        var anchors = SearchEngine.FilteredAnchors.Of(idx.Index.Manifest, order, dist, FilterEstimates.Of(filter, idx.Index.Manifest), K);
        var exact = new SearchOptions { K = K, Filter = filter, Exact = true, FilterStrategy = FilterStrategy.Partitions };
        var plans = engine.PlanFiltered(anchors, exact, [1.0, 2.0]);
        foreach (var (plan, cf) in plans.Zip(new[] { 1.0, 2.0 }))
            AssertSamePlan(engine, engine.Plan(ctx, exact with { CentroidFactor = cf }), plan, $"exact, CF {cf}");

        var options = new SearchOptions { K = K, Filter = filter };
        Assert.Throws<ArgumentException>(() => engine.PlanFiltered(anchors, options, [1.2, 1.1]));
        Assert.Throws<ArgumentException>(() => engine.PlanFiltered(anchors, options, [0.9]));
        Assert.Throws<ArgumentException>(() => engine.PlanFiltered(anchors, options with { Recall = 0.9 }, [1.0]));
        Assert.Throws<ArgumentException>(() => engine.PlanFiltered(anchors, options with { K = K + 1 }, [1.0]));
        Assert.Throws<ArgumentException>(() => engine.PlanFiltered(anchors, options with { K = K + 1 }));
    }

    /// <summary>Same strategy, partitions, cursor and stats, and the same later passes for every answer size.</summary>
    private static void AssertSamePlan(SearchEngine engine, QueryPlan expected, QueryPlan got, string what)
    {
        Assert.True(expected.Strategy == got.Strategy, $"{what}: strategy {expected.Strategy} vs {got.Strategy}");
        Assert.True(expected.Partitions.SequenceEqual(got.Partitions), $"{what}: partitions {string.Join(',', expected.Partitions)} vs {string.Join(',', got.Partitions)}");
        Assert.True(expected.Target == got.Target, $"{what}: target");
        Assert.True(expected.Options == got.Options, $"{what}: options {expected.Options} vs {got.Options}");
        Assert.True(expected.Stats.PartitionsPlanned == got.Stats.PartitionsPlanned && expected.Stats.EstimatedMatches == got.Stats.EstimatedMatches
            && expected.Stats.CentroidFactor == got.Stats.CentroidFactor && expected.Stats.RerankFactor == got.Stats.RerankFactor
            && expected.Stats.Strategy == got.Stats.Strategy && expected.Stats.PredictedRecall == got.Stats.PredictedRecall, $"{what}: stats");
        // Later passes with a short answer that grows by one each pass.
        for (int results = 0; ; results++)
        {
            var a = engine.NextPass(expected, results);
            var b = engine.NextPass(got, results);
            Assert.True(a.SequenceEqual(b), $"{what}: pass with {results} results: {string.Join(',', a)} vs {string.Join(',', b)}");
            if (a.Length == 0) break;
        }
    }
}
