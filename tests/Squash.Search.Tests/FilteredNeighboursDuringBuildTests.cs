using Squash.Core;
using Squash.Index.Attributes;
using Squash.Index.Build;

namespace Squash.Search.Tests;

/// <summary>
/// The filtered families' exact neighbours found from a build's input while it builds (in chunks of rows, before there
/// are partitions) give the filtered calibration exactly what the partition-by-partition pass over the built index gives:
/// the same families, match counts, neighbours and so every plan's recall and cost.
/// </summary>
public sealed class FilteredNeighboursDuringBuildTests
{
    /// <remarks>
    /// 256 dimensions make a chunk 4,096 rows, so 10,000 rows are three chunks, the last one short. The attributes give
    /// both range families that 10,000 rows can measure (10 % and 1 %) on <c>u</c> and the two value families on <c>label</c>.
    /// </remarks>
    [Theory]
    [InlineData(3, Metric.L2)]
    [InlineData(8, Metric.L2)]
    [InlineData(5, Metric.Cosine)]
    [InlineData(6, Metric.InnerProduct)]
    public async Task TheyMeasureEveryPlanAsThePartitionPassDoes(int seed, Metric metric)
    {
        const int n = 10_000, dims = 256, k = RecallCalibrator.DefaultK, sample = 300, dense = 200;
        var data = TestData.Clustered(n, dims, clusters: 12, seed: seed);
        var rng = new Random(seed);
        var table = AttributeReader.ReadJsonLines(new StringReader(string.Concat(Enumerable.Range(0, n).Select(i =>
            $"{{\"attributes\":{{\"label\":{i % 7},\"u\":{rng.Next(100_000)},\"colour\":\"{(i % 3 == 0 ? "red" : "blue")}\"}}}}\n"))), "attrs.jsonl");
        var rows = CalibratedBuild.CalibrationRows(n, seed, sample, dense)!;
        using var idx = new TestData.TempIndex(data, n, dims, new IndexBuildOptions { Partitions = 40, Seed = seed, Metric = metric, Attributes = table, HeldOutRows = rows });
        var queries = CalibrationQueries.FromRows(data, dims, rows);

        using var during = new FilteredRecallCalibrator.NeighboursDuringBuild(table, table.Encoding, data, n, dims, metric, queries, dense, k, CancellationToken.None);
        var drawn = await during.FinishAsync();
        Assert.NotNull(drawn);
        Assert.True(drawn.DrawnFor(idx.Index, queries, dense, k), $"seed {seed}: drawn for another index or other queries");
        // Another set of queries (even with equal rows), or another dense count, is not what they were drawn for.
        Assert.False(drawn.DrawnFor(idx.Index, CalibrationQueries.FromRows(data, dims, rows), dense, k));
        Assert.False(drawn.DrawnFor(idx.Index, queries, dense - 1, k));

        var found = FilteredRecallCalibrator.Measure(idx.Index, queries, k, denseQueries: dense, drawn: drawn);
        var expected = FilteredRecallCalibrator.Measure(idx.Index, queries, k, denseQueries: dense);
        Assert.Equal(["range 10%", "range 1%", "other value", "own value"], expected.Select(f => f.Name));
        Assert.Equal(expected.Select(f => f.Name), found.Select(f => f.Name));
        for (int f = 0; f < expected.Count; f++)
        {
            string where = $"seed {seed}, {metric}, family {expected[f].Name}";
            Assert.True(expected[f].Selectivity.SequenceEqual(found[f].Selectivity), $"{where}: selectivities differ");
            Assert.True(expected[f].AnchorRatio!.SequenceEqual(found[f].AnchorRatio!), $"{where}: anchor ratios differ");
            Assert.True(expected[f].Recall.Cast<double>().SequenceEqual(found[f].Recall.Cast<double>()), $"{where}: recalls differ");
            Assert.True(expected[f].Cost.Cast<double>().SequenceEqual(found[f].Cost.Cast<double>()), $"{where}: costs differ");
            // Not a trivial agreement: most plans of a family miss something on some query.
            Assert.Contains(expected[f].Recall.Cast<double>(), r => r < 1);
        }
    }

    /// <summary>A build given a calibration started earlier publishes the calibration it would have made itself; one started for other vectors or options is refused.</summary>
    [Fact]
    public async Task ABuildWithTheCalibrationStartedEarlierPublishesTheSameCalibration()
    {
        const int n = 3_000, dims = 16, seed = 4;
        var data = TestData.Clustered(n, dims, clusters: 10, seed: seed);
        var table = AttributeReader.ReadJsonLines(new StringReader(string.Concat(Enumerable.Range(0, n).Select(i =>
            $"{{\"attributes\":{{\"label\":{i % 5},\"u\":{(i * 7919) % 100_000}}}}}\n"))), "attrs.jsonl");
        var options = new IndexBuildOptions { Partitions = 12, Seed = seed, Attributes = table };
        string folder = Path.Combine(Path.GetTempPath(), "squash-test-" + Guid.NewGuid().ToString("N"));
        try
        {
            var itself = await CalibratedBuild.BuildAndPublishAsync(new Storage.IndexStore(new Storage.FolderBlobStore(folder), "a"), data, n, dims, options);
            using var started = CalibratedBuild.StartCalibration(data, n, dims, options.Metric, options.Seed);
            var early = await CalibratedBuild.BuildAndPublishAsync(new Storage.IndexStore(new Storage.FolderBlobStore(folder), "b"), data, n, dims, options, started: started);
            Assert.NotNull(itself.Calibration?.Filtered);
            Assert.Equal(System.Text.Json.JsonSerializer.Serialize(itself.Calibration with { Seconds = 0 }),
                System.Text.Json.JsonSerializer.Serialize(early.Calibration! with { Seconds = 0 }));

            var store = new Storage.IndexStore(new Storage.FolderBlobStore(folder), "c");
            var otherSeed = await Assert.ThrowsAsync<ArgumentException>(() => CalibratedBuild.BuildAndPublishAsync(store, data, n, dims, options with { Seed = 5 }, started: started));
            Assert.StartsWith("the calibration was started for other vectors, another metric or another seed", otherSeed.Message);
            await Assert.ThrowsAsync<ArgumentException>(() => CalibratedBuild.BuildAndPublishAsync(store, (float[])data.Clone(), n, dims, options, started: started));
            await Assert.ThrowsAsync<ArgumentException>(() => CalibratedBuild.BuildAndPublishAsync(store, data, n, dims, options with { Metric = Metric.Cosine }, started: started));
            var twice = await Assert.ThrowsAsync<ArgumentException>(() => CalibratedBuild.BuildAndPublishAsync(store, data, n, dims, options, sampleSize: 300, started: started));
            Assert.StartsWith("a started calibration already holds its queries", twice.Message);
            var without = await Assert.ThrowsAsync<ArgumentException>(() => CalibratedBuild.BuildAndPublishAsync(store, data, n, dims, options, calibrate: false, started: started));
            Assert.StartsWith("a calibration was started for a build without one", without.Message);
            Assert.Null(await store.GetCurrentAsync());
        }
        finally
        {
            try { Directory.Delete(folder, recursive: true); } catch (IOException) { }
        }
    }
}
