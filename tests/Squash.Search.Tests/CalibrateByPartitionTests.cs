using System.Text.Json;
using Squash.Core;
using Squash.Core.Vectors;
using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.Index.Model;
using Squash.Search.Builds;

namespace Squash.Search.Tests;

/// <summary>
/// The publish task's calibration (partition by partition, one in memory at a time) gives exactly the plans of the
/// in-memory calibration that <c>squash build</c> runs, and reads each partition it needs once.
/// </summary>
public sealed class CalibrateByPartitionTests
{
    /// <param name="sample">Base-sample rows: past <see cref="RecallCalibrator.DefaultQueries"/> the rest are measured
    /// against the reference plan (the two-phase estimate), which the partition-by-partition calibration does in a second pass.</param>
    /// <param name="attributes">With attributes: the filtered bands agree too (a sparse range filters every query, the others the exactly measured ones).</param>
    [Theory]
    [InlineData(3, 200, false)]
    [InlineData(11, 200, false)]
    [InlineData(5, 400, false)]
    [InlineData(5, 400, true)]
    public async Task ItEqualsTheInMemoryCalibrationAndReadsEachPartitionOncePerPass(int seed, int sample, bool attributes)
    {
        const int n = 4000, dims = 12, k = RecallCalibrator.DefaultK, depth = RecallCalibrator.ExactDepth;
        var data = TestData.Clustered(n, dims, clusters: 15, seed: seed);
        var rng = new Random(seed);
        var table = attributes
            ? AttributeReader.ReadJsonLines(new StringReader(string.Concat(Enumerable.Range(0, n).Select(i =>
                $"{{\"attributes\":{{\"label\":{i % 7},\"u\":{rng.Next(100_000)}}}}}\n"))), "attrs.jsonl")
            : null;
        using var idx = new TestData.TempIndex(data, n, dims, new IndexBuildOptions { Partitions = 40, Seed = seed, Attributes = table }, calibrate: true,
            calibrationSize: sample, exactQueries: RecallCalibrator.DefaultQueries);
        var built = idx.Index.Manifest.Calibration!;
        Assert.Equal("base-sample", built.Source);
        Assert.Equal(sample, built.Queries);
        var rows = CalibratedBuild.CalibrationRows(n, seed, sample, RecallCalibrator.DefaultQueries)!;
        var queries = CalibrationQueries.FromRows(data, dims, rows);

        // What the queue build's assign tasks would hand over: exact neighbours of the first DefaultQueries (here merged from
        // uneven blocks, in reverse order), the partition of every row they name, and each query's own row as stored.
        var measured = queries.Take(RecallCalibrator.DefaultQueries);
        var exact = new StreamingGroundTruth(measured, depth, Metric.L2);
        var blocks = new[] { (0, 1500), (1500, 999), (2499, 1501) };
        foreach (var (first, count) in blocks.Reverse())
            exact.Merge(StreamingGroundTruth.BlockBest(measured, depth, Metric.L2, data[(first * dims)..((first + count) * dims)], count, first));
        var partitionOf = new Dictionary<long, int>();
        var stored = new float[queries.Count * idx.Index.Manifest.InternalDimensions];
        for (int p = 0; p < idx.Index.PartitionCount; p++)
        {
            var ids = idx.Index.Codes(p).Ids;
            for (int i = 0; i < ids.Length; i++)
            {
                partitionOf[ids[i]] = p;
                int q = Array.IndexOf(rows, ids[i]);
                if (q >= 0) idx.Index.Vectors(p).Row(i).CopyTo(stored.AsSpan(q * dims, dims));
            }
        }
        var lazy = await OpenedIndex.OpenUnpublishedAsync(idx.Store, idx.Index.Manifest, loadAll: false);
        var reads = new Dictionary<int, int>();
        var fitted = await RecallCalibrator.CalibrateByPartitionAsync(lazy, exact.Result(), queries, partitionOf, stored, async (p, ct) =>
        {
            lock (reads) reads[p] = reads.GetValueOrDefault(p) + 1;
            var entry = lazy.Manifest.Partitions[p];
            return (await idx.Store.ReadCodesAsync(lazy.Manifest, entry, ct), await idx.Store.ReadVectorsAsync(lazy.Manifest, entry, ct));
        }, readAttributes: !attributes ? null : async (p, ct) =>
        {
            var entry = lazy.Manifest.Partitions[p];
            return (await idx.Store.ReadCodesAsync(lazy.Manifest, entry, ct), await idx.Store.ReadAttributesAsync(lazy.Manifest, entry, ct));
        });

        Assert.NotNull(fitted);
        Assert.Equal(JsonSerializer.Serialize(built.Plans), JsonSerializer.Serialize(fitted.Plans));
        Assert.Equal((built.K, built.Queries, built.Source), (fitted.K, fitted.Queries, fitted.Source));
        Assert.Equal(attributes, built.Filtered is not null);
        Assert.Equal(JsonSerializer.Serialize(built.Filtered), JsonSerializer.Serialize(fitted.Filtered));
        // The filtered bands at the other K too, from the same read of each partition.
        Assert.Equal(attributes ? RecallCalibrator.OtherKs : null, built.FilteredByK?.Select(b => b.K));
        Assert.Equal(JsonSerializer.Serialize(built.FilteredByK), JsonSerializer.Serialize(fitted.FilteredByK));
        // The frontiers at the other K: past K on the exactly measured queries; below it on every query, as K itself (against
        // the reference plan's answer past the exact ones).
        Assert.Equal(RecallCalibrator.OtherKs, built.ByK!.Select(f => f.K));
        Assert.All(built.ByK!, f => Assert.Equal(f.K < k ? sample : Math.Min(sample, RecallCalibrator.DefaultQueries), f.Queries));
        Assert.Equal(JsonSerializer.Serialize(built.ByK), JsonSerializer.Serialize(fitted.ByK));
        // The filtered replay's reads go through readAttributes and the vectors read above (its third pass); the lists of the
        // other K are collected in the first.
        int passes = (sample > RecallCalibrator.DefaultQueries ? 2 : 1) + (attributes ? 1 : 0);
        Assert.All(reads, r => Assert.InRange(r.Value, 1, passes));
        Assert.False(lazy.IsLoaded(0), "the lazily opened index was never loaded whole");
        // The in-memory entry point on the same inputs agrees too (one replay serves both).
        var again = RecallCalibrator.Calibrate(idx.Index, exact.Result(), queries, k);
        Assert.Equal(JsonSerializer.Serialize(built.Plans), JsonSerializer.Serialize(again!.Plans));
        Assert.Equal(JsonSerializer.Serialize(built.ByK), JsonSerializer.Serialize(again.ByK));
    }

    [Fact]
    public void APartitionMissingFromTheMapIsAnErrorNamingTheRow()
    {
        const int n = 600, dims = 6;
        var data = TestData.Clustered(n, dims, clusters: 5, seed: 2);
        using var idx = new TestData.TempIndex(data, n, dims, new IndexBuildOptions { Partitions = 6, Seed = 2 });
        var queries = new CalibrationQueries(data[..dims], 1, dims, null, "test");
        var exact = new[] { new[] { 5, 6, 7, 8, 9, 10, 11, 12, 13, 14 } };
        // Planned in parallel, so the error arrives inside an AggregateException.
        var e = Assert.Throws<AggregateException>(() => RecallCalibrator.CalibrateByPartitionAsync(idx.Index, exact, queries, new Dictionary<long, int>(), null,
            (_, _) => throw new InvalidOperationException("nothing should be read")).GetAwaiter().GetResult());
        Assert.All(e.InnerExceptions, x => Assert.Contains("no partition given for row", Assert.IsType<ArgumentException>(x).Message));
    }

    [Fact]
    public void APartialRoundTripsAndMergesLikeTheStreamedAnswer()
    {
        const int n = 900, dims = 7, k = 10;
        var data = TestData.Clustered(n, dims, clusters: 4, seed: 5);
        var queries = CalibrationQueries.FromRows(data, dims, [3, 400, 899]);
        var streamed = new StreamingGroundTruth(queries, k, Metric.L2);
        streamed.Add(data, n, 0);
        var merged = new StreamingGroundTruth(queries, k, Metric.L2);
        foreach (var (first, count) in new[] { (600, 300), (0, 250), (250, 350) })
        {
            var best = StreamingGroundTruth.BlockBest(queries, k, Metric.L2, data[(first * dims)..((first + count) * dims)], count, first);
            var partial = new CalibrationPartial(best, [first], [1], [first + 1], [2], Enumerable.Range(0, dims).Select(i => (float)i).ToArray(), dims);
            var back = CalibrationPartial.FromBytes(partial.ToBytes(), "c000001.seg");
            Assert.Equal(best.Select(b => b.ToArray()), back.Best.Select(b => b.ToArray()));
            Assert.Equal((first, 1, first + 1, 2, dims), (back.LabelIds[0], back.Labels[0], back.HeldIds[0], back.HeldLabels[0], back.HeldStored.Length));
            merged.Merge(back.Best);
        }
        Assert.Equal(streamed.Result(), merged.Result());
    }
}
