using Squash.Core;
using Squash.Core.Vectors;
using Squash.Search;
using Squash.Search.Builds;

namespace Squash.Search.Tests;

/// <summary>Exact neighbours merged block by block equal the whole-set brute force, ties (duplicates) included.</summary>
public sealed class StreamingGroundTruthTests
{
    [Theory]
    [InlineData(Metric.L2, 1)]
    [InlineData(Metric.L2, 7)]
    [InlineData(Metric.Cosine, 3)]
    [InlineData(Metric.InnerProduct, 5)]
    public void BlockByBlockEqualsTheWholeSet(Metric metric, int seed)
    {
        const int n = 1000, dims = 9, k = 10;
        var rng = new Random(seed);
        // Coarse values make many exact ties; every 50th row duplicates its predecessor.
        var data = new float[n * dims];
        for (int i = 0; i < data.Length; i++) data[i] = rng.Next(0, 4);
        for (int i = 50; i < n; i += 50) Array.Copy(data, (i - 1) * dims, data, i * dims, dims);
        var queries = CalibrationQueries.FromRows(data, dims, [0, 49, 50, 333, 999]);
        var whole = GroundTruth.Compute(new VectorSet(data, n, dims), new VectorSet(queries.Data, queries.Count, dims), k, metric,
            accept: (q, id) => id != queries.SelfIds![q]);
        var streamed = new StreamingGroundTruth(queries, k, metric);
        // Uneven blocks, one smaller than k.
        foreach (var (first, count) in new[] { (0, 333), (333, 7), (340, 600), (940, 60) })
            streamed.Add(data[(first * dims)..((first + count) * dims)], count, first);
        Assert.True(whole.Zip(streamed.Result()).All(p => p.First.SequenceEqual(p.Second)), $"seed {seed}, metric {metric}");
    }
}
