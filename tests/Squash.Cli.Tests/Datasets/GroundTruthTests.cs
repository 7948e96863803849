using Squash.Core.Vectors;
using Squash.Cli.Datasets;
using Squash.Core;

namespace Squash.Cli.Tests.Datasets;

public sealed class GroundTruthTests
{
    public static TheoryData<Metric, int, int> Cases => new()
    {
        // Dimensions off the SIMD width and query counts off the 4-query kernel exercise both tails.
        { Metric.L2, 37, 11 },
        { Metric.L2, 64, 4 },
        { Metric.Cosine, 37, 11 },
        { Metric.Cosine, 5, 9 },
        { Metric.InnerProduct, 37, 11 },
        { Metric.InnerProduct, 1, 3 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Matches_naive_brute_force(Metric metric, int dims, int queryCount)
    {
        var baseSet = TestData.Random(700, dims, seed: dims);
        var queries = TestData.Random(queryCount, dims, seed: 1000 + dims);
        const int k = 10;

        var actual = GroundTruth.Compute(baseSet, queries, k, metric);

        Assert.Equal(queryCount, actual.Length);
        for (int q = 0; q < queryCount; q++)
        {
            AssertSameRanking(Naive(baseSet, queries.Row(q), k, metric, _ => true), actual[q], baseSet, queries.Row(q), metric);
        }
    }

    /// <summary>
    /// A block of four queries scores base rows three at a time, then the tile's last rows one at a time, and a block's
    /// last queries one at a time: the same pair must come out bit for bit the same whichever kernel scored it, or the
    /// reference would depend on how the work was split.
    /// </summary>
    [Theory]
    [InlineData(Metric.L2, 37)]
    [InlineData(Metric.L2, 64)]
    [InlineData(Metric.InnerProduct, 37)]
    public void Distances_do_not_depend_on_which_kernel_scored_the_pair(Metric metric, int dims)
    {
        // 301 rows: a tile ends on a row the three-row kernel leaves to the one-row kernel.
        var baseSet = TestData.Random(301, dims, seed: 11);
        var queries = TestData.Random(5, dims, seed: 12);
        int k = baseSet.Count;
        // Query 4 is a block's fifth query (one-row, one-query kernel) in the first run and its first in the second.
        var reordered = new float[queries.Data.Length];
        for (int q = 0; q < 5; q++) queries.Row((q + 4) % 5).CopyTo(reordered.AsSpan(q * dims, dims));

        var (idsA, distA) = GroundTruth.ComputeWithDistances(baseSet, queries, k, metric);
        var (idsB, distB) = GroundTruth.ComputeWithDistances(baseSet, new VectorSet(reordered, 5, dims), k, metric);
        for (int q = 0; q < 5; q++)
        {
            var a = idsA[q].Zip(distA[q]).ToDictionary(p => p.First, p => p.Second);
            var b = idsB[(q + 1) % 5].Zip(distB[(q + 1) % 5]).ToDictionary(p => p.First, p => p.Second);
            for (int id = 0; id < k; id++)
                Assert.True(a[id] == b[id], $"query {q}, row {id}: {a[id]:R} in one run, {b[id]:R} in the other");
        }
    }

    [Theory]
    [InlineData(Metric.L2)]
    [InlineData(Metric.Cosine)]
    [InlineData(Metric.InnerProduct)]
    public void Accept_predicate_filters_candidates(Metric metric)
    {
        var baseSet = TestData.Random(500, 24, seed: 7);
        var queries = TestData.Random(6, 24, seed: 8);
        // Per-query filter so a mix-up of query indices would show.
        bool Accept(int q, int id) => id % (q + 2) == 0;

        var actual = GroundTruth.Compute(baseSet, queries, 5, metric, accept: Accept);
        for (int q = 0; q < queries.Count; q++)
        {
            int query = q;
            Assert.All(actual[q], id => Assert.True(Accept(query, id)));
            AssertSameRanking(Naive(baseSet, queries.Row(q), 5, metric, id => Accept(query, id)), actual[q], baseSet, queries.Row(q), metric);
        }
    }

    [Fact]
    public void Rows_with_too_few_accepted_ids_are_padded_with_minus_one()
    {
        var baseSet = TestData.Random(50, 8, seed: 1);
        var queries = TestData.Random(2, 8, seed: 2);
        var actual = GroundTruth.Compute(baseSet, queries, 5, Metric.L2, accept: (_, id) => id is 3 or 40);
        foreach (int[] row in actual)
        {
            Assert.Equal(5, row.Length);
            Assert.Equal([3, 40], row[..2].Order());
            Assert.Equal([-1, -1, -1], row[2..]);
        }
    }

    [Theory]
    [InlineData(Metric.L2)]
    [InlineData(Metric.Cosine)]
    [InlineData(Metric.InnerProduct)]
    public void Ties_go_to_the_lower_id(Metric metric)
    {
        // Rows 9, 2 and 6 (in that base order: 2, 6, 9) are exact copies of the query; the others are far away.
        var baseSet = TestData.Random(12, 6, seed: 3, scale: 0.01f);
        float[] query = [1, 2, 3, 4, 5, 6];
        foreach (int copy in new[] { 9, 2, 6 })
        {
            query.CopyTo(baseSet.Data, copy * 6);
        }

        var queries = new VectorSet(query, 1, 6);
        Assert.Equal([2, 6, 9], GroundTruth.Compute(baseSet, queries, 3, metric)[0]);
        // k = 2 makes the heap choose between equal distances: the later id 9 must not evict 2 or 6.
        Assert.Equal([2, 6], GroundTruth.Compute(baseSet, queries, 2, metric)[0]);
    }

    [Fact]
    public void Exact_duplicates_rank_first_even_with_large_norms()
    {
        // Pixel-like values: a norm expansion ‖x‖²+‖q‖²−2x·q would not give exactly 0 here.
        var rng = new Random(11);
        var baseSet = new VectorSet(Enumerable.Range(0, 200 * 784).Select(_ => (float)rng.Next(256)).ToArray(), 200, 784);
        var query = baseSet.Row(123).ToArray();
        var result = GroundTruth.Compute(baseSet, new VectorSet(query, 1, 784), 1, Metric.L2);
        Assert.Equal(123, result[0][0]);
    }

    [Fact]
    public void Zero_vectors_have_cosine_distance_one()
    {
        var baseSet = new VectorSet([0, 0, 1, 0, -1, 0], 3, 2);
        var result = GroundTruth.Compute(baseSet, new VectorSet([1, 0], 1, 2), 3, Metric.Cosine);
        Assert.Equal([1, 0, 2], result[0]); // cos 1 → 0; zero vector → 1; opposite → 2
    }

    [Fact]
    public void Progress_reaches_the_query_count()
    {
        var baseSet = TestData.Random(100, 8, seed: 1);
        var queries = TestData.Random(203, 8, seed: 2);
        var reports = new System.Collections.Concurrent.ConcurrentBag<int>();
        GroundTruth.Compute(baseSet, queries, 3, Metric.L2, new InlineProgress(reports.Add));
        Assert.Equal(203, reports.Max());
    }

    [Fact]
    public void Cancellation_is_honoured()
    {
        var baseSet = TestData.Random(2000, 32, seed: 1);
        var queries = TestData.Random(64, 32, seed: 2);
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(
            () => GroundTruth.Compute(baseSet, queries, 3, Metric.L2, cancellationToken: cts.Token));
    }

    [Fact]
    public void Arguments_are_validated()
    {
        var baseSet = TestData.Random(10, 4, seed: 1);
        Assert.Throws<ArgumentException>(() => GroundTruth.Compute(baseSet, TestData.Random(2, 5, seed: 2), 3, Metric.L2));
        Assert.Throws<ArgumentOutOfRangeException>(() => GroundTruth.Compute(baseSet, baseSet, 0, Metric.L2));
        Assert.Throws<ArgumentOutOfRangeException>(() => GroundTruth.Compute(baseSet, baseSet, 11, Metric.L2));
        Assert.Throws<ArgumentOutOfRangeException>(() => GroundTruth.Compute(baseSet, baseSet, 3, (Metric)42));
    }

    /// <summary>Scalar reference in double precision: score every base row, sort by (distance, id).</summary>
    private static int[] Naive(VectorSet baseSet, ReadOnlySpan<float> q, int k, Metric metric, Func<int, bool> accept)
    {
        var scored = new List<(double Distance, int Id)>();
        for (int id = 0; id < baseSet.Count; id++)
        {
            if (accept(id))
            {
                scored.Add((Distance(metric, baseSet.Row(id), q), id));
            }
        }

        return scored.OrderBy(s => s.Distance).ThenBy(s => s.Id).Take(k).Select(s => s.Id).ToArray();
    }

    private static double Distance(Metric metric, ReadOnlySpan<float> x, ReadOnlySpan<float> q)
    {
        double dot = 0, xx = 0, qq = 0, l2 = 0;
        for (int i = 0; i < x.Length; i++)
        {
            dot += (double)x[i] * q[i];
            xx += (double)x[i] * x[i];
            qq += (double)q[i] * q[i];
            l2 += ((double)x[i] - q[i]) * ((double)x[i] - q[i]);
        }

        return metric switch
        {
            Metric.L2 => l2,
            Metric.InnerProduct => -dot,
            _ => xx == 0 || qq == 0 ? 1 : 1 - dot / Math.Sqrt(xx * qq),
        };
    }

    /// <summary>
    /// Same ids in the same order, except that two ids whose reference distances agree to float precision may
    /// swap (the kernel accumulates in float, the reference in double).
    /// </summary>
    private static void AssertSameRanking(int[] expected, int[] actual, VectorSet baseSet, ReadOnlySpan<float> q, Metric metric)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            if (expected[i] == actual[i])
            {
                continue;
            }

            double want = Distance(metric, baseSet.Row(expected[i]), q);
            double got = Distance(metric, baseSet.Row(actual[i]), q);
            Assert.True(
                Math.Abs(want - got) <= 1e-5 * Math.Max(1, Math.Abs(want)),
                $"rank {i}: expected id {expected[i]} (distance {want}), got id {actual[i]} (distance {got})");
        }
    }

    private sealed class InlineProgress(Action<int> report) : IProgress<int>
    {
        public void Report(int value) => report(value);
    }
}
