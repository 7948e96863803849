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
/// the index, and such queries flatter every plan (bench/writes.md, hot spot). So a drawn row whose nearest other row lies
/// within <see cref="NearCopyRatio"/> of its K-th is left out of the queries, like a held-out query, which has no copy in
/// the index; for data of intrinsic dimension m a genuine held-out row is that close to its nearest neighbour with
/// probability about K·ratio^m, so on ordinary data almost none are left out and the estimate is the build's.
/// </para>
/// Filtered bands are kept from the old calibration.
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
    /// <summary>Fewer live rows than this (or held-out-like queries, with copies filling up to it): the version keeps the old calibration.</summary>
    public const int MinimumQueries = 100;
    /// <summary>A drawn row whose nearest other row is closer than this fraction of its K-th nearest is a near-copy's twin, not a held-out query.</summary>
    public const double NearCopyRatio = 0.5;
    /// <summary>Rows searched at most to find the queries (near-copies left out): this many times the queries wanted.</summary>
    private const int DrawFactor = 4;

    /// <summary>What a measurement used: the queries kept, and the drawn rows left out as near-copies.</summary>
    public sealed record Measurement(RecallCalibration Calibration, int Searched, int NearCopies);

    /// <summary>The new calibration, or null when the version is too small to calibrate (the caller keeps the old one).</summary>
    public static async Task<Measurement?> MeasureAsync(IndexStore store, IndexManifest manifest, int seed, CancellationToken ct)
    {
        var opened = await OpenedIndex.OpenUnpublishedAsync(store, manifest, ct).ConfigureAwait(false);
        int d = manifest.InternalDimensions, dims = manifest.Dimensions, k = RecallCalibrator.DefaultK;
        int partitions = opened.PartitionCount;
        long count = 0;
        for (int p = 0; p < partitions; p++) count += opened.Codes(p).Ids.Length;
        if (count < Math.Max(MinimumQueries, RecallCalibrator.MinimumVectors) || count > int.MaxValue) return null;

        // A draw of live rows, by position in partition order (seeded: the same version and seed draw the same queries).
        var start = new int[partitions + 1];
        for (int p = 0; p < partitions; p++) start[p + 1] = start[p] + opened.Codes(p).Ids.Length;
        int wanted = Math.Min(RecallCalibrator.DefaultQueries, (int)count - 1);
        int[] drawn = CalibrationQueries.SampleRows((int)count, Math.Min((int)count, DrawFactor * wanted), seed);
        new Random(seed).Shuffle(drawn); // SampleRows sorts: the order searched must not favour low positions

        var bounds = new PartitionBounds(opened);
        var kept = new List<(int Position, float[] User, float[] Inner, int[] Exact)>(wanted);
        var copies = new List<(int Position, float[] User, float[] Inner, int[] Exact)>();
        int searched = 0;
        for (int from = 0; from < drawn.Length && kept.Count < wanted; from += wanted)
        {
            var block = drawn[from..Math.Min(drawn.Length, from + wanted)];
            var found = new (float[] User, float[] Inner, int[] Exact, bool Copy)[block.Length];
            Parallel.For(0, block.Length, new ParallelOptions { CancellationToken = ct }, i =>
            {
                int position = block[i];
                int p = PartitionAt(start, position);
                int row = position - start[p];
                // A stored row as a query in the user's space: L2 and cosine store the vector (cosine normalised, the same
                // direction), inner product the vector followed by the augmented coordinate.
                var user = opened.Vectors(p).Row(row)[..dims].ToArray();
                var inner = new QueryContext(opened, user).Internal;
                var (ids, squared) = bounds.Nearest(inner, k, p, row);
                // Squared distances: the ratio squared. A query with fewer than K others has no K-th to compare with.
                bool copy = squared[^1] > 0 && float.IsFinite(squared[^1]) && squared[0] < NearCopyRatio * NearCopyRatio * squared[^1];
                found[i] = (user, inner, ids, copy);
            });
            searched += block.Length;
            for (int i = 0; i < block.Length; i++)
                (found[i].Copy ? copies : kept).Add((block[i], found[i].User, found[i].Inner, found[i].Exact));
        }
        // Too few held-out-like rows (an index made mostly of near-copies): fill up with copies rather than never measuring.
        var queries = kept.Count >= Math.Min(MinimumQueries, wanted) ? kept.Take(wanted).ToList() : kept.Concat(copies).Take(wanted).ToList();
        if (queries.Count < Math.Min(MinimumQueries, wanted)) return null;

        int n = queries.Count;
        var userData = new float[(long)n * dims];
        var selfIds = new long[n];
        var exact = new int[n][];
        for (int q = 0; q < n; q++)
        {
            queries[q].User.CopyTo(userData, (long)q * dims);
            selfIds[q] = bounds.RowNumber(queries[q].Position);
            exact[q] = queries[q].Exact;
        }
        var set = new CalibrationQueries(userData, n, dims, selfIds, "live-sample");
        var measured = RecallCalibrator.Calibrate(opened, exact, set, k, cancellationToken: ct, filtered: false);
        return measured is null ? null : new Measurement(measured with { Filtered = manifest.Calibration?.Filtered }, searched, copies.Count);
    }

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
