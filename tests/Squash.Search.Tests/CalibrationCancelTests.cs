using Squash.Core;
using Squash.Core.Vectors;
using Squash.Index.Attributes;
using Squash.Index.Build;

namespace Squash.Search.Tests;

/// <summary>
/// A calibration cancelled while its unfiltered replays run stops as cancelled, with the filtered families it runs beside
/// them stopped too (not an error of theirs, and not an aggregate of both).
/// </summary>
public sealed class CalibrationCancelTests
{
    [Theory]
    [InlineData(4)]
    [InlineData(9)]
    public void CancellingDuringTheReplaysStopsTheCalibration(int seed)
    {
        const int n = 4000, dims = 12, k = RecallCalibrator.DefaultK, sample = 400;
        var data = TestData.Clustered(n, dims, clusters: 15, seed: seed);
        var rng = new Random(seed);
        var table = AttributeReader.ReadJsonLines(new StringReader(string.Concat(Enumerable.Range(0, n).Select(i =>
            $"{{\"attributes\":{{\"label\":{i % 7},\"u\":{rng.Next(100_000)}}}}}\n"))), "attrs.jsonl");
        using var idx = new TestData.TempIndex(data, n, dims, new IndexBuildOptions { Partitions = 40, Seed = seed, Attributes = table });
        var rows = CalibratedBuild.CalibrationRows(n, seed, sample, RecallCalibrator.DefaultQueries)!;
        var queries = CalibrationQueries.FromRows(data, dims, rows);
        var exact = GroundTruth.Compute(new VectorSet(data, n, dims), new VectorSet(queries.Take(RecallCalibrator.DefaultQueries).Data,
            RecallCalibrator.DefaultQueries, dims), k + 1, Metric.L2);
        // Each query's own row left out, as a build hands them over.
        var neighbours = exact.Select((ids, q) => ids.Where(id => id != rows[q]).Take(k).ToArray()).ToArray();

        using var cancel = new CancellationTokenSource();
        int reports = 0;
        var progress = new SynchronousProgress(_ => { if (Interlocked.Increment(ref reports) == 5) cancel.Cancel(); });
        var error = Record.Exception(() => RecallCalibrator.Calibrate(idx.Index, neighbours, queries, k, progress, cancel.Token));
        Assert.True(error is OperationCanceledException, $"seed {seed}: {error?.GetType().Name ?? "no exception"}: {error?.Message}");

        // The same inputs, not cancelled: a calibration with both parts.
        var fitted = RecallCalibrator.Calibrate(idx.Index, neighbours, queries, k);
        Assert.NotNull(fitted?.Filtered);
    }

    private sealed class SynchronousProgress(Action<double> report) : IProgress<double>
    {
        public void Report(double value) => report(value);
    }
}
