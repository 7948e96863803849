using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Squash.Core.Partitioning;

/// <summary>
/// Balanced k-means: k-means++ seeding and Lloyd iterations on a sample, then a greedy capacity-constrained
/// assignment of all rows (rows that lose most by not getting their first choice pick first), a repair step that
/// fills underfull partitions with their nearest rows, and a couple of re-centre / re-assign rounds.
/// Deterministic for a given seed whatever the thread count: all parallel work writes per-row or per-partition
/// outputs, and every sum runs in a fixed order.
/// </summary>
public static class BalancedKMeans
{
    private const int Candidates = 8;        // nearest centroids kept per row for the greedy assignment
    private const int BalancedRounds = 3;    // balanced assignments of all rows, each followed by re-centring
    private const double LloydTolerance = 1e-3; // stop Lloyd once fewer than this fraction of sample labels change
    private const int SeedChunk = 2048;      // rows per parallel chunk in the k-means++ distance update

    /// <summary>Size bounds every partition satisfies: [floor((1−b)·N/P), ceil((1+b)·N/P)], clamped to be feasible.</summary>
    public static (int Min, int Max) SizeBounds(int count, int partitions, double balance)
    {
        double ideal = (double)count / partitions;
        // The small nudges only ever tighten the bounds (never below/above N/P), guarding against 8.9999… style rounding.
        int min = (int)Math.Floor((1 - balance) * ideal + 1e-9);
        int max = (int)Math.Ceiling((1 + balance) * ideal - 1e-9);
        min = Math.Min(min, count / partitions);
        max = Math.Max(max, (count + partitions - 1) / partitions);
        return (Math.Max(min, 0), max);
    }

    /// <summary>
    /// Partitions the <paramref name="count"/> row-major rows of <paramref name="dims"/> floats into
    /// <paramref name="partitions"/> balanced partitions.
    /// </summary>
    /// <exception cref="ArgumentException">count = 0, partitions &gt; count, bad shapes, non-finite values or options.</exception>
    public static PartitionAssignment Fit(
        ReadOnlySpan<float> rows,
        int count,
        int dims,
        int partitions,
        int seed,
        BalancedKMeansOptions? options = null,
        IProgress<double>? progress = null)
    {
        options ??= new BalancedKMeansOptions();
        if (count < 1)
            throw new ArgumentException($"count must be at least 1 (got {count}).", nameof(count));
        if (dims < 1)
            throw new ArgumentException($"dims must be at least 1 (got {dims}).", nameof(dims));
        if (partitions < 1)
            throw new ArgumentException($"partitions must be at least 1 (got {partitions}).", nameof(partitions));
        if (partitions > count)
            throw new ArgumentException($"partitions ({partitions}) exceeds the row count ({count}).", nameof(partitions));
        if (rows.Length < (long)count * dims)
            throw new ArgumentException($"rows has {rows.Length} values, fewer than count×dims = {(long)count * dims}.", nameof(rows));
        if ((long)count * Math.Min(partitions, Candidates) > Array.MaxLength || (long)partitions * dims > Array.MaxLength / 2)
            throw new ArgumentException("count or partitions × dims is too large for the candidate and centroid buffers.", nameof(count));
        if (options.MaxIterations < 0)
            throw new ArgumentException("MaxIterations must be non-negative.", nameof(options));
        if (!(options.Balance >= 0 && options.Balance < 1))
            throw new ArgumentException("Balance must be in [0, 1).", nameof(options));
        if (options.SampleSize < 0)
            throw new ArgumentException("SampleSize must be non-negative.", nameof(options));
        if (options.Threads < 0)
            throw new ArgumentException("Threads must be non-negative.", nameof(options));
        rows = rows[..(count * dims)];
        foreach (float v in rows)
        {
            if (!float.IsFinite(v))
                throw new ArgumentException("rows contains a non-finite value.", nameof(rows));
        }

        var opts = new ParallelOptions { MaxDegreeOfParallelism = options.Threads > 0 ? options.Threads : Environment.ProcessorCount };
        unsafe
        {
            fixed (float* data = rows)
            {
                var ctx = new Context(data, count, dims, partitions, opts);
                return ctx.Run(seed, options, progress);
            }
        }
    }

    private sealed unsafe class Context(float* data, int n, int dims, int partitions, ParallelOptions opts)
    {
        private ReadOnlySpan<float> Row(float* src, int i) => new(src + (long)i * dims, dims);

        public PartitionAssignment Run(int seed, BalancedKMeansOptions options, IProgress<double>? progress)
        {
            var rng = new Random(seed);
            int sampleSize = options.SampleSize > 0
                ? Math.Clamp(options.SampleSize, partitions, n)
                : (int)Math.Min(n, Math.Max(256L * partitions, 20000));
            sampleSize = (int)Math.Min(sampleSize, Math.Max(partitions, Array.MaxLength / dims)); // sample buffer must be one array

            // Partial Fisher–Yates: the first sampleSize entries are a uniform random subset in random order.
            var perm = new int[n];
            for (int i = 0; i < n; i++)
                perm[i] = i;
            for (int i = 0; i < sampleSize; i++)
            {
                int j = rng.Next(i, n);
                (perm[i], perm[j]) = (perm[j], perm[i]);
            }

            // Seeding is sequential over centroids, so it runs on a prefix of the sample small enough to stay
            // in cache (32·P rows, at least 20,000): a 256k×128 sample would stream 131 MB per centroid.
            int seedCount = (int)Math.Min(sampleSize, Math.Max(32L * partitions, 20000));
            Array.Sort(perm, 0, seedCount);
            Array.Sort(perm, seedCount, sampleSize - seedCount);

            // Budget: the sample is copied once into a contiguous pinned buffer (sampleSize × dims floats,
            // 256k × 128 → 131 MB): scattered rows cost a TLB miss each on every seeding step and Lloyd pass.
            // When the sample is every row, only the seeding prefix is copied and Lloyd reads the input in place.
            bool sampleIsAll = sampleSize == n;
            int copied = sampleIsAll ? seedCount : sampleSize;
            var buffer = GC.AllocateUninitializedArray<float>(copied * dims, pinned: true);
            for (int i = 0; i < copied; i++)
                Row(data, perm[i]).CopyTo(buffer.AsSpan(i * dims, dims));
            float* bp = (float*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(buffer));

            var centroids = SeedPlusPlus(bp, seedCount, rng);
            progress?.Report(0.1);
            Lloyd(sampleIsAll ? data : bp, sampleSize, centroids, options.MaxIterations, progress);
            progress?.Report(0.5);
            GC.KeepAlive(buffer);

            var (min, max) = SizeBounds(n, partitions, options.Balance);
            var labels = new int[n];
            int[] sizes = [];
            for (int round = 0; round < BalancedRounds; round++)
            {
                BalancedAssign(centroids, min, max, labels);
                sizes = Recentre(data, n, labels, centroids);
                progress?.Report(0.5 + 0.5 * (round + 1) / BalancedRounds);
            }

            return new PartitionAssignment
            {
                Partitions = partitions,
                Dimensions = dims,
                Centroids = centroids,
                Labels = labels,
                Sizes = sizes,
            };
        }

        private float[] SeedPlusPlus(float* src, int m, Random rng)
        {
            var centroids = new float[partitions * dims];
            var best = new float[m];
            int chunks = (m + SeedChunk - 1) / SeedChunk;
            var chunkSums = new double[chunks];
            best.AsSpan().Fill(float.PositiveInfinity);
            nint srcAddr = (nint)src;

            int pick = rng.Next(m);
            for (int c = 0; c < partitions; c++)
            {
                Row(src, pick).CopyTo(centroids.AsSpan(c * dims, dims));
                if (c == partitions - 1)
                    break;

                var centroid = centroids.AsMemory(c * dims, dims);
                Parallel.For(0, chunks, opts, chunk =>
                {
                    var cs = centroid.Span;
                    int end = Math.Min(m, (chunk + 1) * SeedChunk);
                    double sum = 0;
                    for (int i = chunk * SeedChunk; i < end; i++)
                    {
                        float d = CentroidTable.SquaredDistance(Row((float*)srcAddr, i), cs);
                        if (d < best[i])
                            best[i] = d;
                        sum += best[i];
                    }
                    chunkSums[chunk] = sum;
                });

                double total = 0;
                foreach (double s in chunkSums)
                    total += s;
                pick = total > 0 && double.IsFinite(total) ? SampleProportional(best, chunkSums, rng.NextDouble() * total) : rng.Next(m);
            }
            return centroids;
        }

        // Index i with probability best[i] / Σ best, walking chunk sums first (same order they were formed in).
        private static int SampleProportional(float[] best, double[] chunkSums, double u)
        {
            int chunk = 0;
            while (chunk < chunkSums.Length - 1 && u >= chunkSums[chunk])
            {
                u -= chunkSums[chunk];
                chunk++;
            }
            int end = Math.Min(best.Length, (chunk + 1) * SeedChunk);
            int last = -1;
            for (int i = chunk * SeedChunk; i < end; i++)
            {
                if (best[i] <= 0)
                    continue;
                last = i;
                if (u < best[i])
                    return i;
                u -= best[i];
            }
            if (last >= 0)
                return last;
            for (int i = best.Length - 1; i >= 0; i--)
            {
                if (best[i] > 0)
                    return i;
            }
            return 0;
        }

        private void Lloyd(float* src, int s, float[] centroids, int maxIterations, IProgress<double>? progress)
        {
            var labels = new int[s];
            var dist = new float[s];
            labels.AsSpan().Fill(-1);
            var next = new int[s];
            for (int iter = 0; iter < maxIterations; iter++)
            {
                var table = new CentroidTable(centroids, partitions, dims);
                table.Nearest(src, null, s, 1, next, dist, opts);
                int changed = 0;
                for (int i = 0; i < s; i++)
                {
                    if (next[i] != labels[i])
                        changed++;
                }
                (labels, next) = (next, labels);

                var sizes = Recentre(src, s, labels, centroids);
                ReseedEmpty(src, sizes, dist, centroids);
                progress?.Report(0.1 + 0.4 * (iter + 1) / maxIterations);
                if (changed <= LloydTolerance * s)
                    break;
            }
        }

        // Empty clusters take the sample rows farthest from their centroids (ties → lower index), one each.
        private void ReseedEmpty(float* src, int[] sizes, float[] dist, float[] centroids)
        {
            if (Array.IndexOf(sizes, 0) < 0)
                return;
            var keys = new ulong[dist.Length];
            for (int i = 0; i < dist.Length; i++)
                keys[i] = DescendingKey(dist[i], i);
            Array.Sort(keys);
            int k = 0;
            for (int c = 0; c < partitions; c++)
            {
                if (sizes[c] == 0)
                    Row(src, (int)(uint)keys[k++]).CopyTo(centroids.AsSpan(c * dims, dims));
            }
        }

        // Means of members in float64, summed in row order per partition (parallel over partitions → deterministic).
        // Partitions without members keep their centroid. Returns the sizes.
        private int[] Recentre(float* src, int count, int[] labels, float[] centroids)
        {
            var sizes = new int[partitions];
            foreach (int l in labels.AsSpan(0, count))
                sizes[l]++;
            var offsets = new int[partitions + 1];
            for (int p = 0; p < partitions; p++)
                offsets[p + 1] = offsets[p] + sizes[p];
            var order = new int[count];
            var fill = offsets.AsSpan(0, partitions).ToArray();
            for (int i = 0; i < count; i++)
                order[fill[labels[i]]++] = i;

            nint srcAddr = (nint)src;
            Parallel.For(
                0,
                partitions,
                opts,
                () => new double[dims],
                (p, _, sum) =>
                {
                    int from = offsets[p], to = offsets[p + 1];
                    if (from == to)
                        return sum;
                    Array.Clear(sum);
                    for (int i = from; i < to; i++)
                    {
                        var row = Row((float*)srcAddr, order[i]);
                        for (int k = 0; k < dims; k++)
                            sum[k] += row[k];
                    }
                    double inv = 1.0 / (to - from);
                    var dst = centroids.AsSpan(p * dims, dims);
                    for (int k = 0; k < dims; k++)
                        dst[k] = (float)(sum[k] * inv);
                    return sum;
                },
                _ => { });
            return sizes;
        }

        private void BalancedAssign(float[] centroids, int min, int max, int[] labels)
        {
            var table = new CentroidTable(centroids, partitions, dims);
            int m = Math.Min(partitions, Candidates);
            var candIdx = new int[n * m];
            var candDist = new float[n * m];
            table.Nearest(data, null, n, m, candIdx, candDist, opts);

            // Rows that lose most by missing their first choice go first.
            var keys = new ulong[n];
            for (int i = 0; i < n; i++)
            {
                float regret = m > 1 ? candDist[i * m + 1] - candDist[i * m] : 0f;
                keys[i] = DescendingKey(regret, i);
            }
            Array.Sort(keys);

            var sizes = new int[partitions];
            var assignedDist = new float[n];
            var deferred = new List<int>();
            foreach (ulong key in keys)
            {
                int i = (int)(uint)key;
                if (!TakeNearestWithRoom(i, candIdx.AsSpan(i * m, m), candDist.AsSpan(i * m, m), sizes, max, labels, assignedDist))
                    deferred.Add(i);
            }
            AssignDeferred(table, deferred, sizes, max, labels, assignedDist);
            FillUnderfull(centroids, min, m, candIdx, candDist, sizes, labels, assignedDist);
        }

        private static bool TakeNearestWithRoom(int row, ReadOnlySpan<int> idx, ReadOnlySpan<float> dist, int[] sizes, int max, int[] labels, float[] assignedDist)
        {
            for (int t = 0; t < idx.Length; t++)
            {
                int c = idx[t];
                if (sizes[c] < max)
                {
                    sizes[c]++;
                    labels[row] = c;
                    assignedDist[row] = dist[t];
                    return true;
                }
            }
            return false;
        }

        // Rows whose candidates were all full take the nearest centroid with room among all of them, in the same
        // priority order. Distances come in blocks (budget: DeferredBlock × padded P floats, 2048 × 1008 → 8 MB);
        // full partitions get +∞ added so a vector argmin skips them. Σ max ≥ N guarantees a slot.
        private void AssignDeferred(CentroidTable table, List<int> deferred, int[] sizes, int max, int[] labels, float[] assignedDist)
        {
            if (deferred.Count == 0)
                return;
            const int DeferredBlock = 2048;
            int padded = table.PaddedCount;
            var penalty = new float[padded];
            for (int c = 0; c < padded; c++)
                penalty[c] = c >= partitions || sizes[c] >= max ? float.PositiveInfinity : 0f;
            var ids = deferred.ToArray();
            var block = new float[Math.Min(DeferredBlock, ids.Length) * padded];
            for (int b0 = 0; b0 < ids.Length; b0 += DeferredBlock)
            {
                int cnt = Math.Min(DeferredBlock, ids.Length - b0);
                table.Distances(data, ids[b0..(b0 + cnt)], cnt, block, opts);
                for (int k = 0; k < cnt; k++)
                {
                    var d = block.AsSpan(k * padded, padded);
                    int c = ArgMinWithPenalty(d, penalty);
                    if (c < 0 || c >= partitions)
                        throw new InvalidOperationException("Balanced assignment ran out of capacity.");
                    int row = ids[b0 + k];
                    sizes[c]++;
                    labels[row] = c;
                    assignedDist[row] = d[c];
                    if (sizes[c] >= max)
                        penalty[c] = float.PositiveInfinity;
                }
            }
        }

        // Lowest index of min(d + penalty); -1 if everything is +∞.
        private static int ArgMinWithPenalty(ReadOnlySpan<float> d, ReadOnlySpan<float> penalty)
        {
            ref float dr = ref MemoryMarshal.GetReference(d);
            ref float pr = ref MemoryMarshal.GetReference(penalty);
            var best = Vector256.Create(float.PositiveInfinity);
            for (int j = 0; j < d.Length; j += 8)
                best = Vector256.Min(best, Vector256.LoadUnsafe(ref dr, (nuint)j) + Vector256.LoadUnsafe(ref pr, (nuint)j));
            float m = float.PositiveInfinity;
            for (int t = 0; t < 8; t++)
                m = Math.Min(m, best.GetElement(t));
            if (float.IsPositiveInfinity(m))
                return -1;
            for (int j = 0; j < d.Length; j++)
            {
                if (d[j] + penalty[j] == m)
                    return j;
            }
            return -1;
        }

        // Partitions below the lower bound pull the rows that are cheapest to move (smallest increase in distance)
        // from partitions that can spare one. First candidates are the rows that list them among their m nearest;
        // partitions still short then get fresh lists: every row's nearest among just the still-short centroids,
        // which reaches every row once few remain, so the loop ends.
        private void FillUnderfull(float[] centroids, int min, int m, int[] candIdx, float[] candDist, int[] sizes, int[] labels, float[] assignedDist)
        {
            var under = new List<int>();
            for (int p = 0; p < partitions; p++)
            {
                if (sizes[p] < min)
                    under.Add(p);
            }
            if (under.Count == 0)
                return;

            int[] map = new int[partitions];
            for (int pass = 0; under.Count > 0; pass++)
            {
                int[] idx;
                float[] dist;
                int width;
                if (pass == 0)
                {
                    (idx, dist, width) = (candIdx, candDist, m);
                    for (int p = 0; p < partitions; p++)
                        map[p] = p;
                }
                else
                {
                    var sub = new float[under.Count * dims];
                    for (int u = 0; u < under.Count; u++)
                        centroids.AsSpan(under[u] * dims, dims).CopyTo(sub.AsSpan(u * dims, dims));
                    width = Math.Min(under.Count, Candidates);
                    idx = new int[n * width];
                    dist = new float[n * width];
                    new CentroidTable(sub, under.Count, dims).Nearest(data, null, n, width, idx, dist, opts);
                    for (int u = 0; u < under.Count; u++)
                        map[u] = under[u];
                }
                PullFromLists(under, idx, dist, width, map, min, sizes, labels, assignedDist);
                if (pass > 0 && width == under.Count && under.Any(p => sizes[p] < min))
                    throw new InvalidOperationException("Balanced assignment could not fill a partition (bounds infeasible).");
                under.RemoveAll(p => sizes[p] >= min);
            }
        }

        // idx holds `width` candidate slots per row; map turns a slot value into a partition.
        private void PullFromLists(List<int> under, int[] idx, float[] dist, int width, int[] map, int min, int[] sizes, int[] labels, float[] assignedDist)
        {
            var slot = new int[partitions];
            slot.AsSpan().Fill(-1);
            var lists = new List<ulong>[under.Count];
            for (int u = 0; u < under.Count; u++)
            {
                slot[under[u]] = u;
                lists[u] = [];
            }
            for (int i = 0; i < n; i++)
            {
                for (int t = 0; t < width; t++)
                {
                    int c = map[idx[i * width + t]];
                    if (slot[c] >= 0 && labels[i] != c && sizes[labels[i]] > min)
                        lists[slot[c]].Add(AscendingKey(dist[i * width + t] - assignedDist[i], i));
                }
            }
            for (int u = 0; u < under.Count; u++)
            {
                int p = under[u];
                var list = CollectionsMarshal.AsSpan(lists[u]);
                list.Sort();
                foreach (ulong key in list)
                {
                    if (sizes[p] >= min)
                        break;
                    int i = (int)(uint)key;
                    int q = labels[i];
                    if (q == p || sizes[q] <= min)
                        continue;
                    sizes[q]--;
                    sizes[p]++;
                    labels[i] = p;
                    assignedDist[i] += FromSortable((uint)(key >> 32));
                }
            }
        }

        // Sort keys: high 32 bits order the value, low 32 bits the row index (ties → lower index first).
        private static ulong DescendingKey(float value, int index) => ((ulong)(uint.MaxValue - ToSortable(value)) << 32) | (uint)index;

        private static ulong AscendingKey(float value, int index) => ((ulong)ToSortable(value) << 32) | (uint)index;

        // Monotone map float → uint (NaN treated as 0).
        private static uint ToSortable(float value)
        {
            if (float.IsNaN(value))
                value = 0;
            uint bits = BitConverter.SingleToUInt32Bits(value);
            return (bits & 0x8000_0000u) != 0 ? ~bits : bits | 0x8000_0000u;
        }

        private static float FromSortable(uint s)
        {
            uint bits = (s & 0x8000_0000u) != 0 ? s & 0x7FFF_FFFFu : ~s;
            return BitConverter.UInt32BitsToSingle(bits);
        }
    }
}
