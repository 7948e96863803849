using System.Text.Json;
using Squash.Core.Collections;
using Squash.Index.Build;

namespace Squash.Search.Tests.Filters;

/// <summary>
/// The pass plan an invocation tree runs: every pass's partitions split at random over nodes, each node with its
/// own top-k, the partial lists merged, the next pass asked for with the merged count only — must give exactly
/// what <see cref="SearchEngine.Search"/> gives in one process, filtered or not, with either strategy.
/// </summary>
public class PassPlanTests
{
    private const int N = 3000, Dims = 16, K = 10;

    /// <summary>The plan run as a tree would run it; also checks that no partition is handed out twice.</summary>
    private static (Neighbor[] Best, int Passes, string Strategy) RunAsTree(SearchEngine engine, QueryContext ctx, SearchOptions options, Random rng)
    {
        var index = engine.Index;
        var plan = engine.Plan(ctx, options);
        var nodeOptions = plan.NodeOptions();
        var merged = engine.NewTopK(options);
        var handedOut = new HashSet<int>();
        for (var pass = plan.Partitions; pass.Length > 0; pass = engine.NextPass(plan, merged.Count))
        {
            foreach (int p in pass) Assert.True(handedOut.Add(p), $"partition {p} handed out twice");
            int nodes = rng.Next(1, 7);
            var groups = Enumerable.Range(0, nodes).Select(_ => new List<int>()).ToArray();
            foreach (int p in pass.OrderBy(_ => rng.Next())) groups[rng.Next(nodes)].Add(p);
            var partials = new List<Neighbor[]>();
            foreach (var group in groups)
            {
                var top = engine.NewTopK(options);
                engine.ScanPartitions(ctx, group.ToArray(), plan.CentroidDistances, nodeOptions, top, new QueryStats(),
                    p => new PartitionData(index.Codes(p), index.Vectors(p), index.Attributes(p)));
                partials.Add(top.ToSortedArray());
            }
            foreach (var partial in partials.OrderBy(_ => rng.Next()))
                foreach (var n in partial) merged.TryAdd(n.Id, n.Distance);
        }
        return (merged.ToSortedArray(), plan.Passes, plan.Strategy);
    }

    private static void AssertSame(SearchEngine engine, QueryContext ctx, SearchResult expected, (Neighbor[] Best, int Passes, string Strategy) tree, string what)
    {
        var got = engine.Finish(tree.Best, ctx, new QueryStats());
        Assert.True(expected.Ids.SequenceEqual(got.Ids), $"{what}: ids {string.Join(',', expected.Ids)} vs tree {string.Join(',', got.Ids)}");
        Assert.True(expected.Distances.SequenceEqual(got.Distances), $"{what}: distances differ");
        Assert.Equal(expected.Stats.Passes, tree.Passes);
        Assert.Equal(expected.Stats.Strategy, tree.Strategy);
    }

    [Fact]
    public void TreeRunOfEveryPassEqualsSearchUnfilteredAndFilteredWithBothStrategies()
    {
        // Fewer clusters than partitions, and queries off the data: neighbours span partitions, so the order in which
        // a node meets them (and its running k-th distance) varies with the split.
        var data = TestData.Clustered(N, Dims, clusters: 3, seed: 8);
        var table = FilterTestData.Table(N, 21, out _);
        using var idx = new TestData.TempIndex(data, N, Dims, new IndexBuildOptions { Partitions = 12, EnergyKept = 1, Seed = 5, Attributes = table });
        var engine = idx.Engine;
        var rng = new Random(77);
        var filterRng = new Random(2024);
        // Random nested filters, plus integer ranges narrow enough to leave the first pass short.
        int[] widths = [1, 3, 8, 30, 150];
        var filters = Enumerable.Range(0, 30).Select(_ => FilterTestData.Nested(filterRng, 3))
            .Concat(Enumerable.Range(0, 30).Select(_ =>
            {
                int lo = filterRng.Next(-1000, 1000);
                return $"{{\"qty\":{{\"$gte\":{lo},\"$lt\":{lo + widths[filterRng.Next(widths.Length)]}}}}}";
            }))
            .ToArray();
        int multiPass = 0, shortAnswers = 0;
        var strategies = new HashSet<string>();
        for (int qi = 0; qi < 60; qi++)
        {
            var q = data.AsSpan(qi * 37 * Dims, Dims).ToArray();
            for (int j = 0; j < Dims; j++) q[j] += (float)(TestData.Gaussian(rng) * 0.5);
            var ctx = new QueryContext(idx.Index, q);
            foreach (var baseOptions in new[] { new SearchOptions { K = K }, new SearchOptions { K = K, HammingKeepPercent = 30, RerankFactor = 1, CentroidFactor = 1.1 } })
            {
                AssertSame(engine, ctx, engine.Search(q, baseOptions), RunAsTree(engine, ctx, baseOptions, rng), $"unfiltered q{qi}");
                var json = filters[qi];
                using var doc = JsonDocument.Parse(json);
                int matches = Enumerable.Range(0, N).Count(r => FilterTestData.Reference(doc.RootElement, table, r));
                var filter = idx.Index.Filters.Compile(json);
                foreach (var strategy in new[] { FilterStrategy.Auto, FilterStrategy.Partitions, FilterStrategy.Direct })
                {
                    var options = baseOptions with { Filter = filter, FilterStrategy = strategy };
                    var expected = engine.Search(q, options);
                    AssertSame(engine, ctx, expected, RunAsTree(engine, ctx, options, rng), $"{json} {strategy} q{qi}");
                    strategies.Add(expected.Stats.Strategy);
                    if (expected.Stats.Passes > 1) multiPass++;
                    if (baseOptions.HammingKeepPercent == 100)
                        Assert.True(expected.Ids.Length == Math.Min(K, matches), $"{json} {strategy}: {expected.Ids.Length} results, {matches} matches");
                    else if (expected.Ids.Length < Math.Min(K, matches)) shortAnswers++;
                }
            }
        }
        Assert.True(multiPass > 0, "no query needed a second pass: the test does not exercise NextPass");
        Assert.Contains("direct", strategies);
        Assert.Contains("partitions", strategies);
        Assert.Contains("none", strategies);
        Assert.Equal(0, shortAnswers);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(K - 1)]
    [InlineData(K)]
    [InlineData(K + 1)]
    public void TreeRunKeepsTheCountGuaranteeWithAllMatchesInTheFarthestPartition(int matches)
    {
        var data = TestData.Clustered(N, Dims, clusters: 12, seed: 31);
        var options = new IndexBuildOptions { Partitions = 10, Seed = 9 };
        var q = data.AsSpan(0, Dims).ToArray();
        int[] farRows;
        using (var probe = new TestData.TempIndex(data, N, Dims, options with { Attributes = FilteredSearchTests.Table([], []) }))
        {
            var (order, _) = probe.Engine.RankPartitions(new QueryContext(probe.Index, q));
            farRows = probe.Index.Codes(order[^1]).Ids;
        }
        var both = farRows.Take(matches).ToHashSet();
        using var idx = new TestData.TempIndex(data, N, Dims, options with { Attributes = FilteredSearchTests.Table(both, farRows.ToHashSet()) });
        var filter = idx.Index.Filters.Compile("{\"g\":1,\"h\":1}");
        var ctx = new QueryContext(idx.Index, q);
        var rng = new Random(matches);
        foreach (var strategy in new[] { FilterStrategy.Auto, FilterStrategy.Partitions, FilterStrategy.Direct })
            foreach (bool exact in new[] { false, true })
                for (int split = 0; split < 5; split++)
                {
                    var o = new SearchOptions { K = K, Filter = filter, FilterStrategy = strategy, Exact = exact };
                    var expected = idx.Engine.Search(q, o);
                    Assert.Equal(Math.Min(K, matches), expected.Ids.Length);
                    Assert.All(expected.Ids, id => Assert.Contains((int)id, both));
                    AssertSame(idx.Engine, ctx, expected, RunAsTree(idx.Engine, ctx, o, rng), $"{strategy} exact={exact}");
                }
    }

    [Fact]
    public void NextPassStopsOnceTheAnswerIsFullAndIsDeterministic()
    {
        var data = TestData.Clustered(N, Dims, clusters: 12, seed: 31);
        var far = new HashSet<int>(Enumerable.Range(0, N).Where(i => i % 97 == 0));
        using var idx = new TestData.TempIndex(data, N, Dims, new IndexBuildOptions { Partitions = 10, Seed = 9, Attributes = FilteredSearchTests.Table(far, far) });
        var ctx = new QueryContext(idx.Index, data.AsSpan(0, Dims));
        var options = new SearchOptions { K = K, Filter = idx.Index.Filters.Compile("{\"g\":1,\"h\":1}"), FilterStrategy = FilterStrategy.Partitions };
        var full = idx.Engine.Plan(ctx, options);
        Assert.Empty(idx.Engine.NextPass(full, K));
        Assert.Equal(1, full.Passes);

        // Always reporting an empty answer: passes keep coming, never repeat a partition, end with every partition
        // that can match, and two plans of the same query hand out the same passes.
        var a = idx.Engine.Plan(ctx, options);
        var b = idx.Engine.Plan(ctx, options);
        var seen = new List<int>(a.Partitions);
        Assert.Equal(a.Partitions, b.Partitions);
        for (var pass = idx.Engine.NextPass(a, 0); pass.Length > 0; pass = idx.Engine.NextPass(a, 0))
        {
            Assert.Equal(pass, idx.Engine.NextPass(b, 0));
            seen.AddRange(pass);
        }
        Assert.Empty(idx.Engine.NextPass(b, 0));
        Assert.Equal(seen.Count, seen.Distinct().Count());
        Assert.Equal(idx.Index.PartitionCount, seen.Count); // g and h are both 1 somewhere in every partition: all can match by their codes
        Assert.True(a.Passes <= 1 + (int)Math.Ceiling(Math.Log2(idx.Index.PartitionCount)) + 1, $"{a.Passes} passes");
    }

    [Fact]
    public void TheMarginPastTheFillPointIsTheUnfilteredOneAndDoesNotGrowWithDistance()
    {
        var rng = new Random(5);
        for (int i = 0; i < 1000; i++)
        {
            double nearest = rng.NextDouble() * 10, cf = 1 + rng.NextDouble(), fill = nearest * (1 + 3 * rng.NextDouble());
            // Anchored on the nearest partition it is exactly the unfiltered CF threshold.
            Assert.Equal(cf * nearest, SearchEngine.MarginPast(nearest, nearest, cf), 9);
            // Past a farther anchor it never reaches less far, and adds no more than it adds past the nearest.
            double limit = SearchEngine.MarginPast(fill, nearest, cf);
            Assert.True(limit >= fill, $"{limit} < {fill}");
            Assert.True(limit - fill <= (cf - 1) * nearest + 1e-9, $"margin {limit - fill} > {(cf - 1) * nearest}");
        }
    }

    [Fact]
    public void FilteredScanNodesRefuseToChooseAStrategy()
    {
        var data = TestData.Clustered(300, 4, 3, 1);
        using var idx = new TestData.TempIndex(data, 300, 4, new IndexBuildOptions { Partitions = 2, Attributes = FilterTestData.Table(300, 3, out _) });
        var ctx = new QueryContext(idx.Index, data.AsSpan(0, 4));
        var options = new SearchOptions { K = 5, Filter = idx.Index.Filters.Compile("{\"label\":3}") };
        Assert.Throws<ArgumentException>(() => idx.Engine.ScanPartitions(ctx, [0, 1], idx.Engine.RankPartitions(ctx).Distances, options, idx.Engine.NewTopK(options), new QueryStats()));
    }
}
