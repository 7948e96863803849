using Squash.Core;
using Squash.Core.Vectors;
using Squash.Index.Model;
using Squash.Storage;

namespace Squash.Search.Writes;

/// <summary>
/// Measures the recall calibration again on a version ingest has published; the run then publishes the measured calibration
/// as a manifest-only successor that names the same segments (so the measurement does not delay the rows' visibility). The build's calibration
/// measured plans on the rows it partitioned and coded; ingest codes new rows with quantizers fitted to other rows and
/// widens cells to hold them, so a plan's recall can move as writes accumulate, most when writes move the data's
/// distribution (bench/writes.md has what it measured on replacements from the data's own distribution). The queries are rows ingest wrote, searched leave-one-out: like the build's held-out rows, they took no part in
/// fitting the partitions or the quantizers. Filtered bands are kept from the old calibration.
/// </summary>
public static class IngestRecalibration
{
    /// <summary>
    /// Calibrate again once ingest has changed (upserted or deleted) this share of the index's rows since the last
    /// calibration. Each time costs reading every partition's raw vectors and an exact search of the calibration queries.
    /// </summary>
    public const double DefaultShare = 0.1;
    /// <summary>
    /// A due calibration waits while more of the log waits to be applied (runs follow each other at once then), but not past
    /// this share of the rows changed since the last measurement.
    /// </summary>
    public const double MeasureAtOnceShare = 0.2;
    /// <summary>Fewer fresh rows than this in one run: the calibration waits for a run with more (too few queries to measure with).</summary>
    public const int MinimumQueries = 100;

    /// <summary>The new calibration, or null when the version is too small to calibrate (the caller keeps the old one).</summary>
    /// <param name="freshRows">Row numbers this run wrote (the queries are drawn from those still live).</param>
    public static async Task<RecallCalibration?> MeasureAsync(IndexStore store, IndexManifest manifest, IReadOnlyList<long> freshRows, int seed,
        CancellationToken ct)
    {
        var opened = await OpenedIndex.OpenUnpublishedAsync(store, manifest, ct).ConfigureAwait(false);
        int d = manifest.InternalDimensions, dims = manifest.Dimensions;
        long count = manifest.Count;
        if (count > int.MaxValue / Math.Max(1, d)) return null; // one block of every vector must fit an array
        // Every live row in the internal space, and its row number.
        var stored = new float[count * d];
        var rowAt = new long[count];
        var positionOf = new Dictionary<long, int>((int)count);
        int filled = 0;
        for (int p = 0; p < opened.PartitionCount; p++)
        {
            var ids = opened.Codes(p).Ids;
            opened.Vectors(p).Data.AsSpan(0, ids.Length * d).CopyTo(stored.AsSpan(filled * d));
            for (int i = 0; i < ids.Length; i++) { rowAt[filled] = ids[i]; positionOf[ids[i]] = filled++; }
        }
        var live = freshRows.Where(positionOf.ContainsKey).Distinct().ToArray();
        if (live.Length < MinimumQueries) return null;
        new Random(seed).Shuffle(live);
        var picked = live[..Math.Min(RecallCalibrator.DefaultQueries, live.Length)];
        int n = picked.Length;

        // A stored row as a query in the user's space: L2 and cosine store the vector (cosine normalised, the same
        // direction), inner product the vector followed by the augmented coordinate.
        var user = new float[(long)n * dims];
        var inner = new float[(long)n * d];
        for (int q = 0; q < n; q++)
        {
            stored.AsSpan(positionOf[picked[q]] * d, dims).CopyTo(user.AsSpan(q * dims, dims));
            new QueryContext(opened, user.AsSpan(q * dims, dims)).Internal.AsSpan(0, d).CopyTo(inner.AsSpan(q * d, d));
        }
        // Squared L2 in the internal space orders every metric as the index does (the scans compare exactly that).
        var positions = GroundTruth.Compute(new VectorSet(stored, (int)count, d), new VectorSet(inner, n, d), RecallCalibrator.DefaultK, Metric.L2,
            accept: (q, position) => rowAt[position] != picked[q], cancellationToken: ct);
        var exact = positions.Select(row => row.Select(position => position < 0 ? -1 : checked((int)rowAt[position])).ToArray()).ToArray();
        var queries = new CalibrationQueries(user, n, dims, picked, "ingested-sample");
        var measured = RecallCalibrator.Calibrate(opened, exact, queries, RecallCalibrator.DefaultK, cancellationToken: ct, filtered: false);
        return measured is null ? null : measured with { Filtered = manifest.Calibration?.Filtered };
    }
}
