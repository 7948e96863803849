using System.Numerics.Tensors;
using Squash.Core;
using Squash.Index.Model;
using Squash.Storage;

namespace Squash.Search.Writes;

/// <summary>
/// Measures the recall calibration again on a version ingest has published (the calibration job then publishes it onto the
/// version current by then, <see cref="LogIngest.PublishCalibrationOntoCurrentAsync"/>). The build's calibration measured
/// plans on the rows it partitioned and coded; ingest codes new rows with quantizers fitted to other rows and widens cells
/// to hold them, so a plan's recall can move as writes accumulate, most when writes move the data's distribution.
/// <para>
/// The queries estimate the recall of a query drawn like the data the index now holds, as the build's do: live rows drawn
/// uniformly (base and ingested alike, not only the rows just written, which would measure the write stream's own region),
/// each searched leave-one-out. Leave-one-out stands for a held-out query only while the row is independent of the others;
/// a row with a near-copy in the index (a write that re-sends a stored vector with noise) still has itself, in effect, in
/// the index, and such queries flatter every plan (bench/writes.md, hot spot). So each query is held out with its group:
/// the rows within <see cref="NearCopyRatio"/> of its K-th nearest are left out of its exact answer and of its candidates
/// too (leave-one-group-out, as cross-validation does with dependent samples). Leaving such queries out instead would
/// leave out the region the copies crowd, which is where recall drops. For data of intrinsic dimension m a genuine
/// neighbour is that close with probability about K·ratio^m, so on ordinary data almost no query has a group and the
/// estimate is the build's.
/// </para>
/// The filtered bands are measured again too, from families drawn from the live rows' attributes as a build draws them from
/// its input (each query's near-copies left out of its filtered answers as well): writes that move an attribute's values
/// or where they lie move the filtered plans' recall. An index calibrated on the user's queries
/// (<see cref="RecallCalibration.QueriesBlob"/>) measures those again instead, with the user's filter families when it
/// keeps them: they are what the user said its queries are like. A measurement that draws no family keeps the old bands.
/// </summary>
public static class IngestRecalibration
{
    /// <summary>
    /// Calibrate again once ingest has changed (upserted or deleted) this share of the index's rows since the last
    /// calibration. Each time costs reading every partition's raw vectors and an exact search of the calibration queries.
    /// </summary>
    public const double DefaultShare = 0.1;
    /// <summary>
    /// A due calibration measured inside a run (<c>squash ingest</c>, no queue) waits while more of the log waits to be applied
    /// (runs follow each other at once then), but not past this share of the rows changed since the last measurement.
    /// </summary>
    public const double MeasureAtOnceShare = 0.2;
    /// <summary>Fewer live rows than this: the version keeps the old calibration.</summary>
    public const int MinimumQueries = 100;
    /// <summary>A row closer to a query than this fraction of the query's K-th nearest (the near-copies aside) is the query's near-copy.</summary>
    public const double NearCopyRatio = 0.5;
    /// <summary>Near-copies of a query left out with it at most (a row with more keeps the rest as neighbours).</summary>
    public const int MaxNearCopies = 10;

    /// <summary>What a measurement used: its queries, how many of them had near-copies left out with them, and the user's kept queries it measured (null: live rows).</summary>
    public sealed record Measurement(RecallCalibration Calibration, int Queries, int WithNearCopies, CalibrationQueries? Kept = null);

    /// <summary>The new calibration, or null when the version is too small to calibrate (the caller keeps the old one).</summary>
    public static async Task<Measurement?> MeasureAsync(IndexStore store, IndexManifest manifest, int seed, CancellationToken ct)
    {
        var opened = await OpenedIndex.OpenUnpublishedAsync(store, manifest, ct).ConfigureAwait(false);
        long count = 0;
        for (int p = 0; p < opened.PartitionCount; p++) count += opened.Codes(p).Ids.Length;
        if (count < Math.Max(MinimumQueries, RecallCalibrator.MinimumVectors) || count > int.MaxValue) return null;

        // An index calibrated on the user's queries measures them again, as the build did: the first ExactQueries against
        // their exact neighbours among the live rows, the rest against the reference plan.
        if (await KeptCalibrationQueries.ReadAsync(store, manifest, ct).ConfigureAwait(false) is { } kept)
        {
            var again = MeasureQueries(opened, kept, filtered: true, ct);
            return again is null ? null
                : new Measurement(KeepFilteredBands(again, manifest.Calibration!), kept.Count, 0, kept);
        }

        var (set, exact) = LiveSample(opened, count, seed, ct);
        var measured = RecallCalibrator.Calibrate(opened, exact, set, RecallCalibrator.DefaultK, cancellationToken: ct);
        return measured is null ? null
            : new Measurement(KeepFilteredBands(measured, manifest.Calibration), set.Count, set.LeftOut!.Count(g => g!.Length > 0));
    }

    /// <summary>A measurement that found no filtered bands (no family could be drawn) keeps the old calibration's, at every K.</summary>
    private static RecallCalibration KeepFilteredBands(RecallCalibration measured, RecallCalibration? old) =>
        measured.Filtered is not null ? measured : measured with { Filtered = old?.Filtered, FilteredByK = old?.Filtered is null ? null : old.FilteredByK };

    /// <summary>
    /// The queries a measurement of <paramref name="opened"/> (<paramref name="count"/> live rows) draws with
    /// <paramref name="seed"/>: live rows, by position in partition order (the same version and seed draw the same
    /// queries), each with its near-copies to leave out with it and its exact neighbours among the rest.
    /// </summary>
    public static (CalibrationQueries Queries, int[][] Exact) LiveSample(OpenedIndex opened, long count, int seed, CancellationToken ct)
    {
        int partitions = opened.PartitionCount, dims = opened.Manifest.Dimensions, k = RecallCalibrator.DefaultK, depth = RecallCalibrator.ExactDepth;
        var start = new int[partitions + 1];
        for (int p = 0; p < partitions; p++) start[p + 1] = start[p] + opened.Codes(p).Ids.Length;
        int[] drawn = CalibrationQueries.SampleRows((int)count, Math.Min(Queries(count), (int)count - 1), seed);
        int n = drawn.Length;

        var bounds = new PartitionBounds(opened);
        var user = new float[(long)n * dims];
        var selfIds = new long[n];
        var exact = new int[n][];
        var leftOut = new long[n][];
        Parallel.For(0, n, new ParallelOptions { CancellationToken = ct }, q =>
        {
            int p = PartitionAt(start, drawn[q]);
            int row = drawn[q] - start[p];
            // A stored row as a query in the user's space: L2 and cosine store the vector (cosine normalised, the same
            // direction), inner product the vector followed by the augmented coordinate.
            opened.Vectors(p).Row(row)[..dims].CopyTo(user.AsSpan(q * dims, dims));
            var inner = new QueryContext(opened, user.AsSpan(q * dims, dims)).Internal;
            selfIds[q] = opened.Codes(p).Ids[row];
            var (ids, squared) = bounds.Nearest(inner, depth + MaxNearCopies, p, row);
            // Near-copies: closer than NearCopyRatio of the K-th distance among the rest (squared distances: the ratio squared).
            int copies = 0;
            while (copies < MaxNearCopies && ids[copies + k - 1] >= 0 && squared[copies] < NearCopyRatio * NearCopyRatio * squared[copies + k - 1])
                copies++;
            leftOut[q] = ids[..copies].Select(id => (long)id).ToArray();
            exact[q] = ids[copies..(copies + depth)];
        });
        return (new CalibrationQueries(user, n, dims, selfIds, "live-sample", leftOut), exact);
    }

    /// <summary>
    /// The calibration of <paramref name="queries"/> (the user's: no rows of the index) on an opened version, measured as a
    /// build measures them: the first <see cref="RecallCalibrator.ExactQueries"/> against their exact neighbours among the
    /// live rows (<see cref="PartitionBounds"/>), the rest against the reference plan. Null when the version is too small.
    /// </summary>
    public static RecallCalibration? MeasureQueries(OpenedIndex opened, CalibrationQueries queries, bool filtered, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(opened);
        ArgumentNullException.ThrowIfNull(queries);
        int k = RecallCalibrator.DefaultK, dims = queries.Dimensions;
        var nearest = new PartitionBounds(opened);
        var exact = new int[RecallCalibrator.ExactQueries(opened.Manifest.Count, queries.Count)][];
        Parallel.For(0, exact.Length, new ParallelOptions { CancellationToken = ct }, q =>
            exact[q] = nearest.Nearest(new QueryContext(opened, queries.Data.AsSpan(q * dims, dims)).Internal, RecallCalibrator.ExactDepth).Ids);
        return RecallCalibrator.Calibrate(opened, exact, queries, k, cancellationToken: ct, filtered: filtered);
    }

    /// <summary>
    /// Live rows a measurement draws for <paramref name="count"/> live rows: as many as a build of that size measures against
    /// exact neighbours (<see cref="RecallCalibrator.ExactQueries"/> of its <see cref="RecallCalibrator.BuildQueries"/>
    /// sample), so a re-measured calibration is as precise as the build's where that costs no more than the build's did:
    /// every row here is measured exactly (each needs its near-copies found anyway).
    /// </summary>
    public static int Queries(long count) => RecallCalibrator.ExactQueries(count, RecallCalibrator.BuildQueries(count));

    /// <summary>The partition holding a position in partition order: the last p with start[p] ≤ position (empty partitions skipped).</summary>
    private static int PartitionAt(int[] start, int position)
    {
        int lo = 0, hi = start.Length - 2; // start has one entry per partition and the total
        while (lo < hi)
        {
            int mid = (lo + hi + 1) / 2;
            if (start[mid] <= position) lo = mid; else hi = mid - 1;
        }
        return lo;
    }

    /// <summary>
    /// Exact nearest neighbours over every live row of an opened index, pruned by the routing data: partitions in order of
    /// their lower bound max(0, ‖q − centroid‖ − radius), stopping at the first whose bound passes the K-th distance found
    /// (every row lies within its partition's radius, so no row beyond can enter). Equal to a brute-force pass over all rows
    /// (tested against <see cref="GroundTruth"/>), at a fraction of its distances on clustered data.
    /// </summary>
    public sealed class PartitionBounds
    {
        private readonly OpenedIndex _index;
        private readonly int[] _start;

        public PartitionBounds(OpenedIndex index)
        {
            _index = index;
            _start = new int[index.PartitionCount + 1];
            for (int p = 0; p < index.PartitionCount; p++) _start[p + 1] = _start[p] + index.Codes(p).Ids.Length;
        }

        /// <summary>The row number at a position in partition order.</summary>
        public long RowNumber(int position)
        {
            int p = PartitionAt(_start, position);
            return _index.Codes(p).Ids[position - _start[p]];
        }

        /// <summary>Distances computed by the last calls (for the bench's log: how much the bounds pruned).</summary>
        public long Distances => Interlocked.Read(ref _distances);
        private long _distances;

        /// <summary>
        /// The <paramref name="k"/> nearest row numbers to <paramref name="query"/> (internal space; squared L2 orders every
        /// metric as the index does), nearest first, ties by row number, leaving out the stored row at
        /// (<paramref name="selfPartition"/>, <paramref name="selfRow"/>) (−1: none); −1 pads when fewer exist. Also their squared distances.
        /// </summary>
        public (int[] Ids, float[] Squared) Nearest(ReadOnlySpan<float> query, int k, int selfPartition = -1, int selfRow = -1)
        {
            var routing = _index.Routing;
            int partitions = _index.PartitionCount, d = routing.InternalDimensions;
            var order = new (float Bound, int P)[partitions];
            for (int p = 0; p < partitions; p++)
            {
                float toCentroid = TensorPrimitives.Distance(routing.Centroids.AsSpan(p * d, d), query);
                order[p] = (Math.Max(0, toCentroid - routing.Radii[p]), p);
            }
            Array.Sort(order, (a, b) => a.Bound.CompareTo(b.Bound));
            // Max-heap of the best k by (distance, row): the root is the current k-th.
            var heap = new PriorityQueue<(float Squared, int Row), (float Squared, int Row)>(k + 1,
                Comparer<(float Squared, int Row)>.Create((a, b) => b.Squared != a.Squared ? b.Squared.CompareTo(a.Squared) : b.Row.CompareTo(a.Row)));
            long computed = 0;
            foreach (var (bound, p) in order)
            {
                if (heap.Count == k)
                {
                    // Slack for the two kernels' rounding: a partition is skipped only when clearly beyond the k-th.
                    float kth = MathF.Sqrt(heap.Peek().Squared);
                    if (bound > kth * (1 + 1e-4f) + 1e-6f) break;
                }
                var ids = _index.Codes(p).Ids;
                var vectors = _index.Vectors(p);
                for (int i = 0; i < ids.Length; i++)
                {
                    if (p == selfPartition && i == selfRow) continue;
                    float squared = TensorPrimitives.Distance(vectors.Row(i), query);
                    squared *= squared;
                    computed++;
                    if (heap.Count < k) heap.Enqueue((squared, ids[i]), (squared, ids[i]));
                    else
                    {
                        var top = heap.Peek();
                        if (squared < top.Squared || (squared == top.Squared && ids[i] < top.Row)) heap.EnqueueDequeue((squared, ids[i]), (squared, ids[i]));
                    }
                }
            }
            Interlocked.Add(ref _distances, computed);
            var result = new int[k];
            var distances = new float[k];
            Array.Fill(result, -1);
            Array.Fill(distances, float.PositiveInfinity);
            for (int j = heap.Count - 1; j >= 0; j--)
            {
                var (squared, row) = heap.Dequeue();
                result[j] = row;
                distances[j] = squared;
            }
            return (result, distances);
        }
    }
}
