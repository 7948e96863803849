using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Squash.Core.Bounds;

/// <summary>
/// Lower bounds through a per-query lookup table: for every coded dimension d and cell j,
/// <c>table[offsets[d] + j] = lb_d(j)²</c> (see <see cref="CellBounds"/>). Building it costs one pass over
/// the boundaries (Σ 2^w_d entries) per query and partition; afterwards each dimension of a candidate
/// costs one table load, i.e. one AVX2 gather per 8 dimensions instead of two gathers and the arithmetic.
/// The table uses the boundary offsets, so it has as many entries as the boundary array (the last entry
/// of each dimension is unused).
/// </summary>
public static class LowerBoundTable
{
    public static void Build(ReadOnlySpan<float> q, ReadOnlySpan<float> boundaries, ReadOnlySpan<int> offsets, Span<float> table)
    {
        int dims = q.Length;
        if (offsets.Length < dims || table.Length < boundaries.Length) throw new ArgumentException("table must be as long as the boundaries");
        for (int d = 0; d < dims; d++)
        {
            int start = offsets[d];
            int end = d + 1 < dims ? offsets[d + 1] : boundaries.Length;
            int cells = end - start - 1;
            float v = q[d];
            var b = boundaries.Slice(start, cells + 1);
            var t = table.Slice(start, cells);
            int j = 0;
            if (Vector256.IsHardwareAccelerated && cells >= 8)
            {
                var vq = Vector256.Create(v);
                for (; j + 8 <= cells; j += 8)
                {
                    var lo = Vector256.Create(b.Slice(j, 8));
                    var hi = Vector256.Create(b.Slice(j + 1, 8));
                    var x = Vector256.Max(Vector256.Max(lo - vq, vq - hi), Vector256<float>.Zero);
                    (x * x).CopyTo(t.Slice(j, 8));
                }
            }
            for (; j < cells; j++)
            {
                float x = MathF.Max(MathF.Max(b[j] - v, v - b[j + 1]), 0f);
                t[j] = x * x;
            }
        }
    }

    /// <summary>
    /// start + Σ_d table[offsets[d] + cells[d]], checked against <paramref name="stopAbove"/> every 16
    /// dimensions; returns +∞ as soon as the partial sum passes it (progressive pruning).
    /// </summary>
    public static unsafe float LowerBound(ReadOnlySpan<byte> cells, ReadOnlySpan<float> table, ReadOnlySpan<int> offsets, float start, float stopAbove)
    {
        int dims = offsets.Length;
        if (cells.Length < dims) throw new ArgumentException("cells must cover every dimension");
        float acc = start;
        int d = 0;
        fixed (byte* cp = cells)
        fixed (float* tp = table)
        fixed (int* op = offsets)
        {
            if (Avx2.IsSupported && dims >= 8)
            {
                var sum = Vector256<float>.Zero.WithElement(0, start);
                for (; d + 16 <= dims; d += 16)
                {
                    sum = Avx.Add(sum, Gather(tp, op, cp, d));
                    sum = Avx.Add(sum, Gather(tp, op, cp, d + 8));
                    if (Vector256.Sum(sum) > stopAbove) return float.PositiveInfinity;
                }
                for (; d + 8 <= dims; d += 8) sum = Avx.Add(sum, Gather(tp, op, cp, d));
                acc = Vector256.Sum(sum);
            }
            for (; d < dims; d++) acc += tp[op[d] + cp[d]];
        }
        return acc;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<float> Gather(float* tp, int* op, byte* cp, int d) =>
        Avx2.GatherVector256(tp, Avx2.Add(Avx.LoadVector256(op + d), Avx2.ConvertToVector256Int32(cp + d)), 4);
}
