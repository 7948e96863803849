using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Squash.Core;
using Squash.Core.Kernels;

namespace Squash.Core.Vectors;

/// <summary>
/// Exact top-k by brute force, the reference every recall number is measured against.
/// Distances (smaller is closer): L2 = squared Euclidean, Cosine = 1 − cos (1 when either vector is zero),
/// InnerProduct = −dot. Ties are broken by the lower base id.
/// </summary>
/// <remarks>
/// Work is split into blocks of queries run in parallel; each block walks the base set in cache-sized tiles
/// and scores four queries against three base rows at a time (<see cref="BlockKernels"/>), so a base row is loaded
/// from memory once per block and once per four queries from cache. L2 is accumulated as Σ(x−q)² rather than ‖x‖²+‖q‖²−2x·q: the
/// expansion cancels catastrophically for near-duplicates (Fashion-MNIST has exact duplicates), which would
/// scramble exactly the ties this reference is meant to get right.
/// </remarks>
public static class GroundTruth
{
    // Base rows per tile: ~192 KiB stays in L2 next to the query rows being scored.
    private const int TileBytes = 192 << 10;

    private const int MaxQueryBlock = 64;

    /// <param name="progress">Receives the number of queries finished so far (reported per block, from worker threads).</param>
    /// <param name="accept">
    /// Optional filter: only base ids with <c>accept(queryIndex, baseId)</c> true are candidates. Rows with fewer than
    /// <paramref name="k"/> accepted ids are padded with −1 so the result stays rectangular.
    /// </param>
    /// <param name="workers">Threads to use; 0: one per core.</param>
    /// <returns>One array of <paramref name="k"/> base ids per query, nearest first.</returns>
    public static int[][] Compute(
        VectorSet baseSet,
        VectorSet queries,
        int k,
        Metric metric,
        IProgress<int>? progress = null,
        Func<int, int, bool>? accept = null,
        CancellationToken cancellationToken = default,
        int workers = 0) =>
        ComputeWithDistances(baseSet, queries, k, metric, progress, accept, cancellationToken, workers).Ids;

    /// <summary>
    /// <see cref="Compute"/> with each neighbour's distance (+∞ beside a −1 pad). A pair's distance does not depend on
    /// which other base rows are in the set, so results over consecutive blocks of a base set merge, by (distance, id),
    /// into exactly the result over the whole set: how a build that never holds all vectors gets the same reference.
    /// </summary>
    public static (int[][] Ids, float[][] Distances) ComputeWithDistances(
        VectorSet baseSet,
        VectorSet queries,
        int k,
        Metric metric,
        IProgress<int>? progress = null,
        Func<int, int, bool>? accept = null,
        CancellationToken cancellationToken = default,
        int workers = 0)
    {
        ArgumentNullException.ThrowIfNull(baseSet);
        ArgumentNullException.ThrowIfNull(queries);
        if (baseSet.Dimensions != queries.Dimensions)
        {
            throw new ArgumentException(
                $"base vectors have {baseSet.Dimensions} dimensions but queries have {queries.Dimensions}.", nameof(queries));
        }

        if (k < 1 || k > baseSet.Count)
        {
            throw new ArgumentOutOfRangeException(nameof(k), k, $"k must be between 1 and the base size {baseSet.Count}.");
        }

        ArgumentOutOfRangeException.ThrowIfNegative(workers);
        if (!Enum.IsDefined(metric))
        {
            throw new ArgumentOutOfRangeException(nameof(metric), metric, "unknown metric.");
        }

        int nq = queries.Count;
        var results = new int[nq][];
        var distances = new float[nq][];
        if (nq == 0)
        {
            return (results, distances);
        }

        // Cosine scores dot products and scales by precomputed inverse norms.
        float[]? baseScale = metric == Metric.Cosine ? InverseNorms(baseSet) : null;
        float[]? queryScale = metric == Metric.Cosine ? InverseNorms(queries) : null;

        if (workers == 0) workers = Environment.ProcessorCount;
        int queryBlock = Math.Clamp(RoundUp4((nq + 4 * workers - 1) / (4 * workers)), 4, MaxQueryBlock);
        int tile = Math.Max(8, TileBytes / (baseSet.Dimensions * sizeof(float)));
        int blocks = (nq + queryBlock - 1) / queryBlock;
        int finished = 0;

        void RunBlock(int block)
        {
            int first = block * queryBlock;
            int end = Math.Min(nq, first + queryBlock);
            var job = new Block(baseSet, queries, k, metric, baseScale, queryScale, accept, first, end);
            if (metric == Metric.L2)
            {
                job.Run<BlockKernels.SquaredDifference>(tile, cancellationToken);
            }
            else
            {
                job.Run<BlockKernels.Product>(tile, cancellationToken);
            }

            job.WriteResults(results, distances);
            int done = Interlocked.Add(ref finished, end - first);
            progress?.Report(done);
        }

        // One worker runs on the calling thread: Parallel.For would queue to the pool even then, and a pool thread
        // started by a lowered caller (a build's background calibration) would inherit its priority for good.
        if (workers == 1)
        {
            for (int block = 0; block < blocks; block++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                RunBlock(block);
            }
        }
        else Parallel.For(0, blocks, new ParallelOptions { CancellationToken = cancellationToken, MaxDegreeOfParallelism = workers }, RunBlock);

        return (results, distances);
    }

    private static int RoundUp4(int n) => (n + 3) & ~3;

    private static float[] InverseNorms(VectorSet set)
    {
        var scale = new float[set.Count];
        for (int i = 0; i < scale.Length; i++)
        {
            float norm = TensorPrimitives.Norm(set.Row(i));
            // A zero vector has no direction: scale 0 makes its cosine 0, i.e. distance 1 to everything.
            scale[i] = norm > 0 ? 1f / norm : 0f;
        }

        return scale;
    }

    /// <summary>One block of queries with a bounded max-heap each.</summary>
    private sealed class Block(
        VectorSet baseSet,
        VectorSet queries,
        int k,
        Metric metric,
        float[]? baseScale,
        float[]? queryScale,
        Func<int, int, bool>? accept,
        int first,
        int end)
    {
        private readonly TopK[] _heaps = CreateHeaps(end - first, k);

        public void Run<TAcc>(int tile, CancellationToken ct)
            where TAcc : struct, BlockKernels.IAccumulator
        {
            int dims = baseSet.Dimensions;
            int nb = baseSet.Count;
            ref float baseRef = ref MemoryMarshal.GetArrayDataReference(baseSet.Data);
            ref float queryRef = ref MemoryMarshal.GetArrayDataReference(queries.Data);
            Span<float> scores = stackalloc float[4];
            Span<float> grid = stackalloc float[12];
            for (int t0 = 0; t0 < nb; t0 += tile)
            {
                ct.ThrowIfCancellationRequested();
                int t1 = Math.Min(nb, t0 + tile);
                int q = first;
                for (; q + 4 <= end; q += 4)
                {
                    ref float q0 = ref Unsafe.Add(ref queryRef, (nint)q * dims);
                    ref float q1 = ref Unsafe.Add(ref q0, dims);
                    ref float q2 = ref Unsafe.Add(ref q1, dims);
                    ref float q3 = ref Unsafe.Add(ref q2, dims);
                    int x = t0;
                    for (; x + 3 <= t1; x += 3)
                    {
                        ref float x0 = ref Unsafe.Add(ref baseRef, (nint)x * dims);
                        BlockKernels.Score4x3<TAcc>(ref q0, ref q1, ref q2, ref q3, ref x0, ref Unsafe.Add(ref x0, dims), ref Unsafe.Add(ref x0, 2 * dims), dims, grid);
                        for (int r = 0; r < 3; r++)
                        {
                            Offer(q, x + r, grid[4 * r]);
                            Offer(q + 1, x + r, grid[4 * r + 1]);
                            Offer(q + 2, x + r, grid[4 * r + 2]);
                            Offer(q + 3, x + r, grid[4 * r + 3]);
                        }
                    }

                    for (; x < t1; x++)
                    {
                        BlockKernels.Score4x1<TAcc>(ref q0, ref q1, ref q2, ref q3, ref Unsafe.Add(ref baseRef, (nint)x * dims), dims, scores);
                        Offer(q, x, scores[0]);
                        Offer(q + 1, x, scores[1]);
                        Offer(q + 2, x, scores[2]);
                        Offer(q + 3, x, scores[3]);
                    }
                }

                for (; q < end; q++)
                {
                    ref float q0 = ref Unsafe.Add(ref queryRef, (nint)q * dims);
                    for (int x = t0; x < t1; x++)
                    {
                        Offer(q, x, BlockKernels.Score1<TAcc>(ref q0, ref Unsafe.Add(ref baseRef, (nint)x * dims), dims));
                    }
                }
            }
        }

        public void WriteResults(int[][] results, float[][] distances)
        {
            for (int i = 0; i < _heaps.Length; i++)
            {
                (results[first + i], distances[first + i]) = _heaps[i].ToSorted();
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void Offer(int q, int x, float raw)
        {
            float distance = metric switch
            {
                Metric.L2 => raw,
                Metric.InnerProduct => -raw,
                _ => 1f - raw * queryScale![q] * baseScale![x],
            };

            var heap = _heaps[q - first];
            if (heap.WouldAccept(distance, x) && (accept is null || accept(q, x)))
            {
                heap.Add(distance, x);
            }
        }

        private static TopK[] CreateHeaps(int n, int k)
        {
            var heaps = new TopK[n];
            for (int i = 0; i < n; i++)
            {
                heaps[i] = new TopK(k);
            }

            return heaps;
        }
    }

    /// <summary>Bounded max-heap on (distance, id): the root is the current k-th best, the first to be evicted.</summary>
    private sealed class TopK(int k)
    {
        private readonly float[] _dist = new float[k];
        private readonly int[] _ids = new int[k];
        private int _count;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public bool WouldAccept(float distance, int id) =>
            _count < _dist.Length || Before(distance, id, _dist[0], _ids[0]);

        public void Add(float distance, int id)
        {
            // NaN cannot be ordered; ranking it last keeps the heap consistent.
            if (float.IsNaN(distance))
            {
                distance = float.PositiveInfinity;
            }

            if (_count < _dist.Length)
            {
                int i = _count++;
                while (i > 0)
                {
                    int parent = (i - 1) >> 1;
                    if (!Before(_dist[parent], _ids[parent], distance, id))
                    {
                        break;
                    }

                    _dist[i] = _dist[parent];
                    _ids[i] = _ids[parent];
                    i = parent;
                }

                _dist[i] = distance;
                _ids[i] = id;
                return;
            }

            if (!Before(distance, id, _dist[0], _ids[0]))
            {
                return;
            }

            // Replace the root (worst) and sift the new entry down.
            int pos = 0;
            int n = _count;
            while (true)
            {
                int child = 2 * pos + 1;
                if (child >= n)
                {
                    break;
                }

                if (child + 1 < n && Before(_dist[child], _ids[child], _dist[child + 1], _ids[child + 1]))
                {
                    child++;
                }

                if (!Before(distance, id, _dist[child], _ids[child]))
                {
                    break;
                }

                _dist[pos] = _dist[child];
                _ids[pos] = _ids[child];
                pos = child;
            }

            _dist[pos] = distance;
            _ids[pos] = id;
        }

        public (int[] Ids, float[] Distances) ToSorted()
        {
            var order = new (float Distance, int Id)[_count];
            for (int i = 0; i < _count; i++)
            {
                order[i] = (_dist[i], _ids[i]);
            }

            Array.Sort(order, static (a, b) => a.Distance != b.Distance ? a.Distance.CompareTo(b.Distance) : a.Id.CompareTo(b.Id));
            var ids = new int[_dist.Length];
            var distances = new float[_dist.Length];
            for (int i = 0; i < ids.Length; i++)
            {
                ids[i] = i < order.Length ? order[i].Id : -1;
                distances[i] = i < order.Length ? order[i].Distance : float.PositiveInfinity;
            }

            return (ids, distances);
        }

        /// <summary>True when (d1, id1) ranks strictly ahead of (d2, id2).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static bool Before(float d1, int id1, float d2, int id2) => d1 < d2 || (d1 == d2 && id1 < id2);
    }
}
