using Squash.Core;
using Squash.Index.Build;

namespace Squash.Search.Tests;

/// <summary>Invariant 4: exact mode equals brute force, for every metric.</summary>
public class ExactModeTests
{
    [Theory]
    [InlineData(Metric.L2, 33)]
    [InlineData(Metric.Cosine, 33)]
    [InlineData(Metric.InnerProduct, 33)]
    [InlineData(Metric.L2, 7)]
    [InlineData(Metric.InnerProduct, 65)]
    public void ExactModeEqualsBruteForce(Metric metric, int dims)
    {
        const int n = 3000, k = 10;
        var data = TestData.Clustered(n, dims, clusters: 12, seed: 5 + dims);
        using var idx = new TestData.TempIndex(data, n, dims, new IndexBuildOptions { Metric = metric, Partitions = 8, Seed = 3 });
        var queries = TestData.Clustered(40, dims, clusters: 12, seed: 77);
        for (int qi = 0; qi < 40; qi++)
        {
            var q = queries.AsSpan(qi * dims, dims);
            var expected = TestData.BruteForce(data, n, dims, q, k, metric);
            var got = idx.Engine.Search(q, new SearchOptions { K = k, Exact = true });
            Assert.Equal(k, got.Ids.Length);
            for (int i = 0; i < k; i++)
            {
                // Ids must match except where two distances tie to float precision.
                double tol = 1e-4 * Math.Max(1, Math.Abs(expected[i].Distance));
                Assert.True(Math.Abs(expected[i].Distance - got.Distances[i]) <= tol,
                    $"{metric} query {qi} rank {i}: distance {got.Distances[i]} vs brute force {expected[i].Distance}");
                if (got.Ids[i] != expected[i].Id)
                    Assert.True(Math.Abs(TestData.BruteForce(data, n, dims, q, n, metric).First(e => e.Id == got.Ids[i]).Distance - expected[i].Distance) <= tol,
                        $"{metric} query {qi} rank {i}: id {got.Ids[i]} instead of {expected[i].Id}");
            }
        }
    }

    [Fact]
    public void KLargerThanTheIndexReturnsEveryVector()
    {
        const int n = 50, dims = 8;
        var data = TestData.Clustered(n, dims, 3, 11);
        using var idx = new TestData.TempIndex(data, n, dims, new IndexBuildOptions { Partitions = 2 });
        var got = idx.Engine.Search(data.AsSpan(0, dims), new SearchOptions { K = 100 });
        Assert.Equal(n, got.Ids.Length);
        Assert.Equal(n, got.Ids.Distinct().Count());
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(10_001)]
    public void KOutOfRangeIsRejected(int k)
    {
        var data = TestData.Clustered(100, 4, 2, 1);
        using var idx = new TestData.TempIndex(data, 100, 4, new IndexBuildOptions { Partitions = 2 });
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => idx.Engine.Search(data.AsSpan(0, 4), new SearchOptions { K = k }));
        Assert.Contains("k must be between 1 and 10,000", e.Message);
    }

    [Fact]
    public void QueriesWithWrongDimensionsOrNaNAreRejected()
    {
        var data = TestData.Clustered(100, 4, 2, 1);
        using var idx = new TestData.TempIndex(data, 100, 4, new IndexBuildOptions { Partitions = 2 });
        var e1 = Assert.Throws<ArgumentException>(() => idx.Engine.Search(new float[5], new SearchOptions()));
        Assert.Contains("the query has 5 dimensions; the index has 4", e1.Message);
        var e2 = Assert.Throws<ArgumentException>(() => idx.Engine.Search(new[] { 1f, float.NaN, 0, 0 }, new SearchOptions()));
        Assert.Contains("NaN", e2.Message);
    }
}
