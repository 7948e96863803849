using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Squash.Core.Partitioning;

/// <summary>
/// Centroids packed for the rows × centroids distance kernel, and the parallel "m nearest centroids" search.
/// Squared distances are ‖x‖² + ‖c‖² − 2·x·c with the dot products from a register-blocked 6×16 FMA kernel.
/// </summary>
internal sealed unsafe class CentroidTable
{
    public const int PanelWidth = 16;   // centroids per packed panel (two Vector256<float>)
    private const int TileRows = 6;     // rows per kernel call: 12 accumulators + 2 loads + 1 broadcast = 15 ymm

    // Rows per parallel work item. Budget per worker: a 6 × PaddedCount float score buffer
    // (P = 1000 → 24 KB); the packed centroids (P·d floats, 1000×128 → 512 KB) are shared and stay in L2.
    private const int ChunkRows = 96;

    private readonly float[] _packed;   // [panel][k][16], pinned
    private readonly float[] _norms;    // ‖c‖², +∞ for padding so padded slots never win

    public CentroidTable(ReadOnlySpan<float> centroids, int count, int dims)
    {
        Count = count;
        Dims = dims;
        Panels = (count + PanelWidth - 1) / PanelWidth;
        PaddedCount = Panels * PanelWidth;
        _packed = GC.AllocateArray<float>(Panels * dims * PanelWidth, pinned: true);
        _norms = GC.AllocateArray<float>(PaddedCount, pinned: true);
        for (int c = 0; c < PaddedCount; c++)
        {
            if (c >= count)
            {
                _norms[c] = float.PositiveInfinity;
                continue;
            }
            var row = centroids.Slice(c * dims, dims);
            int panel = c / PanelWidth, lane = c % PanelWidth;
            int baseIdx = panel * dims * PanelWidth + lane;
            for (int k = 0; k < dims; k++)
                _packed[baseIdx + k * PanelWidth] = row[k];
            _norms[c] = SquaredNorm(row);
        }
    }

    public int Count { get; }

    public int Dims { get; }

    public int Panels { get; }

    public int PaddedCount { get; }

    /// <summary>Σ x², 8 lanes then a fixed-order fold (deterministic).</summary>
    public static float SquaredNorm(ReadOnlySpan<float> x)
    {
        ref float r = ref MemoryMarshal.GetReference(x);
        var acc = Vector256<float>.Zero;
        int k = 0;
        for (; k + 8 <= x.Length; k += 8)
        {
            var v = Vector256.LoadUnsafe(ref r, (nuint)k);
            acc = Vector256.FusedMultiplyAdd(v, v, acc);
        }
        float s = Vector256.Sum(acc);
        for (; k < x.Length; k++)
            s += x[k] * x[k];
        return s;
    }

    /// <summary>‖x − y‖² with SIMD; used where only one centroid is involved (seeding, fallbacks).</summary>
    public static float SquaredDistance(ReadOnlySpan<float> x, ReadOnlySpan<float> y)
    {
        ref float a = ref MemoryMarshal.GetReference(x);
        ref float b = ref MemoryMarshal.GetReference(y);
        var acc = Vector256<float>.Zero;
        int k = 0;
        for (; k + 8 <= x.Length; k += 8)
        {
            var d = Vector256.LoadUnsafe(ref a, (nuint)k) - Vector256.LoadUnsafe(ref b, (nuint)k);
            acc = Vector256.FusedMultiplyAdd(d, d, acc);
        }
        float s = Vector256.Sum(acc);
        for (; k < x.Length; k++)
        {
            float d = x[k] - y[k];
            s += d * d;
        }
        return s;
    }

    /// <summary>
    /// For each of the n rows (row i is data[ids[i]] or data[i] when ids is null) finds its m nearest centroids,
    /// nearest first (ties → lower centroid index), into outIdx/outDist[i*m .. i*m+m).
    /// Each row is computed independently, so the result does not depend on the thread count.
    /// </summary>
    public void Nearest(float* data, int[]? ids, int n, int m, int[] outIdx, float[] outDist, ParallelOptions opts)
    {
        if (m < 1 || m > Count)
            throw new ArgumentOutOfRangeException(nameof(m));
        Run(data, ids, n, opts, (t0, cnt, scores) =>
        {
            Span<int> bestIdx = stackalloc int[m];
            Span<float> bestDist = stackalloc float[m];
            for (int t = 0; t < cnt; t++)
            {
                SelectNearest(scores + t * PaddedCount, Count, PaddedCount, bestIdx, bestDist);
                int o = (t0 + t) * m;
                bestIdx.CopyTo(outIdx.AsSpan(o, m));
                bestDist.CopyTo(outDist.AsSpan(o, m));
            }
        });
    }

    /// <summary>All squared distances: out[i*PaddedCount + c] (padding slots hold +∞).</summary>
    public void Distances(float* data, int[]? ids, int n, float[] output, ParallelOptions opts)
    {
        Run(data, ids, n, opts, (t0, cnt, scores) =>
            new ReadOnlySpan<float>(scores, cnt * PaddedCount).CopyTo(output.AsSpan(t0 * PaddedCount, cnt * PaddedCount)));
    }

    private delegate void TileSink(int firstRow, int rowCount, float* distances);

    private void Run(float* data, int[]? ids, int n, ParallelOptions opts, TileSink sink)
    {
        int chunks = (n + ChunkRows - 1) / ChunkRows;
        nint dataAddr = (nint)data;
        Parallel.For(
            0,
            chunks,
            opts,
            () => GC.AllocateArray<float>(TileRows * PaddedCount, pinned: true),
            (chunk, _, scores) =>
            {
                DistanceChunk((float*)dataAddr, ids, chunk * ChunkRows, Math.Min(n, (chunk + 1) * ChunkRows), scores, sink);
                return scores;
            },
            _ => { });
    }

    private void DistanceChunk(float* data, int[]? ids, int start, int end, float[] scores, TileSink sink)
    {
        int dims = Dims, padded = PaddedCount;
        float* packed = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_packed));
        float* norms = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_norms));
        float* s = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(scores));
        float** rows = stackalloc float*[TileRows];
        var minusTwo = Vector256.Create(-2f);

        for (int t0 = start; t0 < end; t0 += TileRows)
        {
            int cnt = Math.Min(TileRows, end - t0);
            for (int t = 0; t < TileRows; t++)
            {
                int i = t0 + Math.Min(t, cnt - 1); // pad a short tile by repeating its last row
                rows[t] = data + (long)(ids is null ? i : ids[i]) * dims;
            }
            for (int p = 0; p < Panels; p++)
                Kernel6x16(rows[0], rows[1], rows[2], rows[3], rows[4], rows[5], packed + (long)p * dims * PanelWidth, dims, s + p * PanelWidth, padded);

            for (int t = 0; t < cnt; t++)
            {
                var xv = Vector256.Create(SquaredNorm(new ReadOnlySpan<float>(rows[t], dims)));
                float* row = s + t * padded;
                for (int j = 0; j < padded; j += 8)
                {
                    var d = Vector256.FusedMultiplyAdd(minusTwo, Vector256.Load(row + j), Vector256.Load(norms + j) + xv);
                    Vector256.Max(d, Vector256<float>.Zero).Store(row + j);
                }
            }
            sink(t0, cnt, s);
        }
    }

    // Keeps the m smallest of dist[0..count) sorted ascending; a vector compare against the current m-th best skips
    // most of the scan. Equal distances keep the lower index first.
    private static void SelectNearest(float* dist, int count, int padded, Span<int> bestIdx, Span<float> bestDist)
    {
        int m = bestIdx.Length;
        int filled = 0;
        float threshold = float.PositiveInfinity;
        for (int j = 0; j < padded; j += 8)
        {
            uint mask = filled < m ? 0xFFu : Vector256.LessThan(Vector256.Load(dist + j), Vector256.Create(threshold)).ExtractMostSignificantBits();
            while (mask != 0)
            {
                int jj = j + BitOperations.TrailingZeroCount(mask);
                mask &= mask - 1;
                if (jj >= count)
                    break;
                float d = dist[jj];
                if (filled == m && !(d < threshold))
                    continue;
                int pos = filled < m ? filled : m - 1;
                while (pos > 0 && bestDist[pos - 1] > d)
                {
                    if (pos < m)
                    {
                        bestDist[pos] = bestDist[pos - 1];
                        bestIdx[pos] = bestIdx[pos - 1];
                    }
                    pos--;
                }
                bestDist[pos] = d;
                bestIdx[pos] = jj;
                if (filled < m)
                    filled++;
                if (filled == m)
                    threshold = bestDist[m - 1];
            }
        }
    }

    // dots[t, 0..16) = Σ_k rows[t][k] · panel[k, 0..16) for 6 rows; output row stride ld floats.
    private static void Kernel6x16(float* r0, float* r1, float* r2, float* r3, float* r4, float* r5, float* panel, int dims, float* dots, int ld)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int k = 0; k < dims; k++)
        {
            var b0 = Vector256.Load(panel);
            var b1 = Vector256.Load(panel + 8);
            panel += PanelWidth;
            var a = Vector256.Create(r0[k]);
            c00 = Vector256.FusedMultiplyAdd(a, b0, c00);
            c01 = Vector256.FusedMultiplyAdd(a, b1, c01);
            a = Vector256.Create(r1[k]);
            c10 = Vector256.FusedMultiplyAdd(a, b0, c10);
            c11 = Vector256.FusedMultiplyAdd(a, b1, c11);
            a = Vector256.Create(r2[k]);
            c20 = Vector256.FusedMultiplyAdd(a, b0, c20);
            c21 = Vector256.FusedMultiplyAdd(a, b1, c21);
            a = Vector256.Create(r3[k]);
            c30 = Vector256.FusedMultiplyAdd(a, b0, c30);
            c31 = Vector256.FusedMultiplyAdd(a, b1, c31);
            a = Vector256.Create(r4[k]);
            c40 = Vector256.FusedMultiplyAdd(a, b0, c40);
            c41 = Vector256.FusedMultiplyAdd(a, b1, c41);
            a = Vector256.Create(r5[k]);
            c50 = Vector256.FusedMultiplyAdd(a, b0, c50);
            c51 = Vector256.FusedMultiplyAdd(a, b1, c51);
        }
        c00.Store(dots);
        c01.Store(dots + 8);
        c10.Store(dots + ld);
        c11.Store(dots + ld + 8);
        c20.Store(dots + 2 * ld);
        c21.Store(dots + 2 * ld + 8);
        c30.Store(dots + 3 * ld);
        c31.Store(dots + 3 * ld + 8);
        c40.Store(dots + 4 * ld);
        c41.Store(dots + 4 * ld + 8);
        c50.Store(dots + 5 * ld);
        c51.Store(dots + 5 * ld + 8);
    }
}
