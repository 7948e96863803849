using System.Text;
using System.Text.Json;
using Squash.Core;
using Squash.Index.Attributes;
using Squash.Index.Build;

namespace Squash.Search.Tests.Filters;

/// <summary>Invariants 2–4 with filters: no violators, K results when K vectors match, exact mode = filtered brute force.</summary>
public class FilteredSearchTests
{
    private const int N = 3000, Dims = 16, K = 10;

    private static (long Id, double Distance)[] BruteForce(float[] data, ReadOnlySpan<float> q, Func<int, bool> accept, int k)
    {
        var all = TestData.BruteForce(data, N, Dims, q, N, Metric.L2);
        return all.Where(e => accept((int)e.Id)).Take(k).ToArray();
    }

    [Fact]
    public void RandomNestedFiltersExactEqualsBruteForceAndDefaultHasRecallWithoutViolators()
    {
        var data = TestData.Clustered(N, Dims, clusters: 12, seed: 8);
        var table = FilterTestData.Table(N, 21, out _);
        // All KLT energy kept: at 16 dimensions the default truncation alone costs unfiltered recall (0.85 vs 0.997).
        using var idx = new TestData.TempIndex(data, N, Dims, new IndexBuildOptions { Partitions = 12, EnergyKept = 1, Seed = 5, Attributes = table });
        // Queries near stored vectors (in distribution), not copies of them.
        var queries = new float[60 * Dims];
        var qrng = new Random(99);
        for (int i = 0; i < 60; i++)
            for (int j = 0; j < Dims; j++) queries[i * Dims + j] = data[(i * 47) * Dims + j] + (float)(TestData.Gaussian(qrng) * 0.05);
        var rng = new Random(2024);
        double hits = 0, wanted = 0;
        int filters = 0;
        var strategies = new HashSet<string>();
        while (filters < 60)
        {
            var json = FilterTestData.Nested(rng, 3);
            using var doc = JsonDocument.Parse(json);
            var root = doc.RootElement;
            var match = new bool[N];
            for (int r = 0; r < N; r++) match[r] = FilterTestData.Reference(root, table, r);
            filters++;
            var filter = idx.Index.Filters.Compile(json);
            var q = queries.AsSpan(filters % 60 * Dims, Dims);
            var expected = BruteForce(data, q, r => match[r], K);

            var exact = idx.Engine.Search(q, new SearchOptions { K = K, Exact = true, Filter = filter });
            Assert.Equal(expected.Length, exact.Ids.Length);
            for (int i = 0; i < expected.Length; i++)
                Assert.True(Math.Abs(expected[i].Distance - exact.Distances[i]) <= 1e-4 * Math.Max(1, expected[i].Distance), $"{json} rank {i}: {exact.Distances[i]} vs {expected[i].Distance}");

            foreach (var strategy in new[] { FilterStrategy.Auto, FilterStrategy.Partitions, FilterStrategy.Direct })
            {
                var got = idx.Engine.Search(q, new SearchOptions { K = K, Filter = filter, FilterStrategy = strategy });
                strategies.Add(got.Stats.Strategy);
                Assert.Equal(expected.Length, got.Ids.Length);
                foreach (long id in got.Ids) Assert.True(match[id], $"{json}: {id} violates the filter ({strategy})");
                Assert.Equal(got.Ids.Length, got.Ids.Distinct().Count());
                if (strategy == FilterStrategy.Partitions)
                {
                    // The Hamming prune must only ever choose among rows that pass the code-level filter.
                    var pruned = idx.Engine.Search(q, new SearchOptions { K = K, Filter = filter, FilterStrategy = strategy, HammingKeepPercent = 30 });
                    Assert.Equal(expected.Length, pruned.Ids.Length);
                    foreach (long id in pruned.Ids) Assert.True(match[id], $"{json}: {id} violates the filter (Hamming prune)");
                }
                if (strategy == FilterStrategy.Auto)
                {
                    var truth = expected.Select(e => e.Id).ToHashSet();
                    hits += got.Ids.Count(truth.Contains);
                    wanted += expected.Length;
                }
            }
        }
        Assert.True(hits / wanted >= 0.95, $"recall@10 {hits / wanted:F3}");
        Assert.Contains("partitions", strategies);
        Assert.Contains("direct", strategies);
    }

    /// <summary>
    /// Attributes g and h never both hold 1 except on <paramref name="matches"/> rows of the partition farthest from
    /// the query, so {"g":1,"h":1} looks plentiful in every other partition by the independence estimate but only
    /// matches there (the farthest partition's other rows hold neither, so its estimate stays low): the first
    /// pass finds nothing and the follow-up pass must reach the farthest partition.
    /// </summary>
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(K - 1)]
    [InlineData(K)]
    [InlineData(K + 1)]
    public void CountGuaranteeWithAllMatchesInTheFarthestPartition(int matches)
    {
        var data = TestData.Clustered(N, Dims, clusters: 12, seed: 31);
        var options = new IndexBuildOptions { Partitions = 10, Seed = 9 };
        var q = data.AsSpan(0, Dims).ToArray();
        int[] farRows;
        using (var probe = new TestData.TempIndex(data, N, Dims, options with { Attributes = Table([], []) }))
        {
            var (order, _) = probe.Engine.RankPartitions(new QueryContext(probe.Index, q));
            farRows = probe.Index.Codes(order[^1]).Ids;
        }
        var both = farRows.Take(matches).ToHashSet();
        using var idx = new TestData.TempIndex(data, N, Dims, options with { Attributes = Table(both, farRows.ToHashSet()) });
        var filter = idx.Index.Filters.Compile("{\"g\":1,\"h\":1}");
        foreach (var strategy in new[] { FilterStrategy.Auto, FilterStrategy.Partitions, FilterStrategy.Direct })
            foreach (bool exact in new[] { false, true })
            {
                var got = idx.Engine.Search(q, new SearchOptions { K = K, Filter = filter, FilterStrategy = strategy, Exact = exact });
                Assert.Equal(Math.Min(K, matches), got.Ids.Length);
                foreach (long id in got.Ids) Assert.Contains((int)id, both);
                for (int i = 0; i < got.Ids.Length; i++) Assert.Equal($"k{got.Ids[i]}", got.Keys![i]);
                if (strategy == FilterStrategy.Partitions && !exact && matches > 0) Assert.True(got.Stats.Passes >= 2, $"passes {got.Stats.Passes}");
            }
    }

    internal static AttributeTable Table(HashSet<int> both, HashSet<int> far)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < N; i++)
        {
            int g = both.Contains(i) || (!far.Contains(i) && i % 2 == 0) ? 1 : 0, h = both.Contains(i) || (!far.Contains(i) && i % 2 == 1) ? 1 : 0;
            sb.Append($"{{\"id\":\"k{i}\",\"attributes\":{{\"g\":{g},\"h\":{h}}}}}\n");
        }
        return AttributeReader.ReadJsonLines(new StringReader(sb.ToString()), "gh.jsonl");
    }

    [Fact]
    public void TheCostRuleScansSelectiveFiltersDirectlyAndBroadOnesByPartition()
    {
        // 64 dimensions: at 16 every strategy costs about the same and the rule may pick either.
        const int dims = 64;
        var data = TestData.Clustered(N, dims, clusters: 12, seed: 8);
        var sb = new StringBuilder();
        for (int i = 0; i < N; i++) sb.Append($"{{\"attributes\":{{\"bucket\":{i % 500},\"half\":{i % 2}}}}}\n");
        var table = AttributeReader.ReadJsonLines(new StringReader(sb.ToString()), "b.jsonl");
        using var idx = new TestData.TempIndex(data, N, dims, new IndexBuildOptions { Partitions = 12, Seed = 5, Attributes = table });
        var q = data.AsSpan(5 * dims, dims);
        var selective = idx.Engine.Search(q, new SearchOptions { K = K, Filter = idx.Index.Filters.Compile("{\"bucket\":7}") });
        Assert.True(selective.Stats.Strategy == "direct", $"{selective.Stats.Strategy} est {selective.Stats.EstimatedMatches} planned {selective.Stats.PartitionsPlanned} scanned {selective.Stats.PartitionsScanned}");
        Assert.Equal(6, selective.Ids.Length);
        Assert.All(selective.Ids, id => Assert.Equal(7, id % 500));
        var broad = idx.Engine.Search(q, new SearchOptions { K = K, Filter = idx.Index.Filters.Compile("{\"half\":1}") });
        Assert.Equal("partitions", broad.Stats.Strategy);
        Assert.Equal(K, broad.Ids.Length);
        var none = idx.Engine.Search(q, new SearchOptions { K = K, Filter = idx.Index.Filters.Compile("{\"bucket\":{\"$gt\":600}}") });
        Assert.Equal("none", none.Stats.Strategy);
        Assert.Empty(none.Ids);
    }

    [Fact]
    public void StringIdsAreReported()
    {
        var data = TestData.Clustered(200, 4, 3, 1);
        var sb = new StringBuilder();
        for (int i = 0; i < 200; i++) sb.Append($"{{\"id\":\"item-{i}\",\"attributes\":{{\"x\":{i}}}}}\n");
        var table = AttributeReader.ReadJsonLines(new StringReader(sb.ToString()), "x.jsonl");
        using var idx = new TestData.TempIndex(data, 200, 4, new IndexBuildOptions { Partitions = 2, Attributes = table });
        var got = idx.Engine.Search(data.AsSpan(0, 4), new SearchOptions { K = 3, Exact = true });
        Assert.Equal("item-0", got.Keys![0]);
        for (int i = 0; i < 3; i++) Assert.Equal($"item-{got.Ids[i]}", got.Keys[i]);
        var filtered = idx.Engine.Search(data.AsSpan(0, 4), new SearchOptions { K = 5, Filter = idx.Index.Filters.Compile("{\"x\":{\"$gte\":150}}") });
        Assert.All(filtered.Ids, id => Assert.True(id >= 150));
        Assert.Equal(5, filtered.Ids.Length);
    }
}
