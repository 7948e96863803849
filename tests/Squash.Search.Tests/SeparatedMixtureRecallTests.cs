using Squash.Core;
using Squash.Index.Build;
using Xunit.Abstractions;

namespace Squash.Search.Tests;

/// <summary>
/// Default build + default query (the 0.95 recall target) on data whose total variance is almost all between clusters:
/// the codes must keep the variance inside partitions, or the axes that separate neighbours are dropped and no plan
/// reaches the target.
/// </summary>
public class SeparatedMixtureRecallTests(ITestOutputHelper output)
{
    [Fact]
    public void DefaultBuildAndQueryReachTheDefaultTargetWhenBetweenClusterSpreadDominates()
    {
        // The centres' spread (64 per axis) dwarfs the within-cluster variance (≈ 3.4), so 95 % of the total variance
        // sits in the 19 axes the 20 centres span; the within-cluster axes are what the codes must keep.
        const int n = 20_000, dims = 64, clusters = 20, queryCount = 200, k = 10, seed = 12;
        var mixture = new SeparatedMixture(dims, clusters, centreSpread: 8.0, seed);
        var data = mixture.Sample(n, seed + 1);
        var queries = mixture.Sample(queryCount, seed + 2);
        using var idx = new TestData.TempIndex(data, n, dims, new IndexBuildOptions(), calibrate: true);
        long hits = 0;
        var options = new SearchOptions { K = k, Recall = SearchOptions.DefaultRecall };
        for (int i = 0; i < queryCount; i++)
        {
            var q = queries.AsSpan(i * dims, dims);
            var truth = TestData.BruteForce(data, n, dims, q, k, Metric.L2).Select(t => t.Id).ToHashSet();
            hits += idx.Engine.Search(q, options).Ids.Count(truth.Contains);
        }
        double recall = hits / (double)(k * queryCount);
        string summary = $"seed {seed}: recall@{k} {recall:F4} at the default target, {idx.Index.Manifest.GlobalDimensions} of {dims} dims kept";
        output.WriteLine(summary);
        // 200 queries measure recall to about ±0.01; the band's floor less that.
        Assert.True(recall >= SearchOptions.DefaultRecall - 0.015, summary + $", expected ≥ {SearchOptions.DefaultRecall - 0.015}");
    }
}

/// <summary>Nearest-centroid partitions can hold a single row or copies of one vector: they are coded and found like any other.</summary>
public class DegeneratePartitionTests
{
    [Fact]
    public void AnOutlierAloneInItsPartitionAndAPartitionOfCopiesAreFoundExactly()
    {
        const int n = 1_200, dims = 8, seed = 21;
        var data = TestData.Clustered(n, dims, 4, seed);
        // Row 0: far from everything (its own partition); rows 1..40: forty copies of one far vector.
        for (int j = 0; j < dims; j++) data[j] = 1_000;
        for (int i = 1; i <= 40; i++) for (int j = 0; j < dims; j++) data[i * dims + j] = j == 0 ? -1_000 : 0;
        using var idx = new TestData.TempIndex(data, n, dims, new IndexBuildOptions { Partitions = 12, Seed = seed });
        foreach (int probe in new[] { 0, 1 })
        {
            var q = data.AsSpan(probe * dims, dims);
            var truth = TestData.BruteForce(data, n, dims, q, 10, Metric.L2);
            // The default plan finds the probe itself; exact mode (every partition, pruned by the bounds) equals brute force,
            // so the bounds of the degenerate partitions hold.
            Assert.Equal(0f, idx.Engine.Search(q, new SearchOptions { K = 10 }).Distances[0]);
            var got = idx.Engine.Search(q, new SearchOptions { K = 10, Exact = true });
            // Copies tie, so distances are compared (to float rounding), not ids.
            Assert.Equal(truth.Length, got.Distances.Length);
            for (int i = 0; i < truth.Length; i++)
                Assert.True(Math.Abs(truth[i].Distance - got.Distances[i]) <= 1e-5 * (1 + truth[i].Distance), $"probe {probe}, rank {i}: {got.Distances[i]} vs {truth[i].Distance}");
        }
    }
}
