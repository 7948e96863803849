using System.Diagnostics;
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
    /// dimensions; returns +∞ as soon as the partial sum passes it (progressive pruning). Runs the kernel
    /// <see cref="UsesGather"/> chose for this machine; both return the same sums up to float rounding.
    /// </summary>
    public static float LowerBound(ReadOnlySpan<byte> cells, ReadOnlySpan<float> table, ReadOnlySpan<int> offsets, float start, float stopAbove) =>
        UsesGather ? LowerBoundGather(cells, table, offsets, start, stopAbove) : LowerBoundLoads(cells, table, offsets, start, stopAbove);

    /// <summary>
    /// The gather kernel's time over the plain-load kernel's on the same rows, the median of
    /// <see cref="KernelProbeRounds"/> paired rounds measured once per process (~3 ms; NaN without AVX2): a gather costs
    /// 5–10 cycles on most x86 cores but ~30 where microcode mitigates Gather Data Sampling, twice its 8 loads (bench/recall.md).
    /// </summary>
    public static double GatherTimeRatio => Probe.GatherTimeRatio;

    /// <summary>
    /// The plain-load kernel's time per dimension in that probe, in ns (median round; NaN without AVX2): a figure of how
    /// fast this machine runs the bound stage at the moment, so that benchmarks taken on different hosts or hours compare.
    /// </summary>
    public static double LoadsNanosecondsPerDimension => Probe.LoadsNanoseconds;

    private static readonly (double GatherTimeRatio, double LoadsNanoseconds) Probe = Avx2.IsSupported ? MeasureKernels() : (double.NaN, double.NaN);

    /// <summary>Whether <see cref="LowerBound"/> uses AVX2 gathers (one per 8 dimensions) or plain loads (four running sums): gathers only where <see cref="GatherTimeRatio"/> is under 0.9.</summary>
    public static bool UsesGather { get; } = GatherTimeRatio < 0.9;

    /// <summary>The lower bound with one AVX2 gather per 8 dimensions (AVX2 machines only).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe float LowerBoundGather(ReadOnlySpan<byte> cells, ReadOnlySpan<float> table, ReadOnlySpan<int> offsets, float start, float stopAbove)
    {
        if (!Avx2.IsSupported) throw new PlatformNotSupportedException("the gather kernel needs AVX2");
        int dims = offsets.Length;
        if (cells.Length < dims) throw new ArgumentException("cells must cover every dimension");
        float acc = start;
        int d = 0;
        fixed (byte* cp = cells)
        fixed (float* tp = table)
        fixed (int* op = offsets)
        {
            if (dims >= 8)
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

    /// <summary>The lower bound with plain loads into four running sums (any machine).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe float LowerBoundLoads(ReadOnlySpan<byte> cells, ReadOnlySpan<float> table, ReadOnlySpan<int> offsets, float start, float stopAbove)
    {
        int dims = offsets.Length;
        if (cells.Length < dims) throw new ArgumentException("cells must cover every dimension");
        fixed (byte* cp = cells)
        fixed (float* tp = table)
        fixed (int* op = offsets)
        {
            float s0 = start, s1 = 0, s2 = 0, s3 = 0;
            int d = 0;
            for (; d + 16 <= dims; d += 16)
            {
                for (int j = d; j < d + 16; j += 4)
                {
                    s0 += tp[op[j] + cp[j]];
                    s1 += tp[op[j + 1] + cp[j + 1]];
                    s2 += tp[op[j + 2] + cp[j + 2]];
                    s3 += tp[op[j + 3] + cp[j + 3]];
                }
                if ((s0 + s1) + (s2 + s3) > stopAbove) return float.PositiveInfinity;
            }
            for (; d < dims; d++) s0 += tp[op[d] + cp[d]];
            return (s0 + s1) + (s2 + s3);
        }
    }

    /// <summary>
    /// Times both kernels on full-length bounds of 64 random rows of 256 dimensions with 16 cells each, four passes (a
    /// table and rows that stay in L1, as a partition's table does), in rounds that alternate which kernel goes first, and
    /// returns the median of the rounds' time ratios and the loads kernel's median time per dimension. Each ratio compares
    /// two runs a few hundred µs apart, so a burst of other work spoils a few rounds, not the median. (A table of 64 cells
    /// a dimension spilled out of L1, where plain loads slow down and a gather does not: there the two measured within
    /// 10 % on a machine where real tables show gathers 2× slower.)
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static (double GatherTimeRatio, double LoadsNanoseconds) MeasureKernels()
    {
        const int dims = 256, cellsPerDim = 16, rows = 64, passes = 4;
        var rng = new Random(1);
        var offsets = new int[dims];
        for (int d = 0; d < dims; d++) offsets[d] = d * (cellsPerDim + 1);
        var table = new float[dims * (cellsPerDim + 1)];
        for (int i = 0; i < table.Length; i++) table[i] = (float)rng.NextDouble();
        var cells = new byte[rows * dims];
        for (int i = 0; i < cells.Length; i++) cells[i] = (byte)rng.Next(cellsPerDim);
        var ratios = new double[KernelProbeRounds];
        var loads = new double[KernelProbeRounds];
        float sink = Bounds(true) + Bounds(false); // compiles both and brings the arrays in
        for (int round = 0; round < ratios.Length; round++)
        {
            bool gatherFirst = round % 2 == 0;
            long first = Time(gatherFirst), second = Time(!gatherFirst);
            ratios[round] = gatherFirst ? (double)first / second : (double)second / first;
            loads[round] = gatherFirst ? second : first;
        }
        GC.KeepAlive(sink);
        Array.Sort(ratios);
        Array.Sort(loads);
        return (ratios[ratios.Length / 2], loads[loads.Length / 2] * 1e9 / Stopwatch.Frequency / ((double)passes * rows * dims));

        long Time(bool gather)
        {
            long t0 = Stopwatch.GetTimestamp();
            sink += Bounds(gather);
            return Stopwatch.GetTimestamp() - t0;
        }

        float Bounds(bool gather)
        {
            float sum = 0;
            for (int pass = 0; pass < passes; pass++)
                for (int r = 0; r < rows; r++)
                    sum += gather ? LowerBoundGather(cells.AsSpan(r * dims, dims), table, offsets, 0, float.PositiveInfinity)
                        : LowerBoundLoads(cells.AsSpan(r * dims, dims), table, offsets, 0, float.PositiveInfinity);
            return sum;
        }
    }

    /// <summary>Rounds of <see cref="MeasureKernels"/> (odd: one median).</summary>
    private const int KernelProbeRounds = 15;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<float> Gather(float* tp, int* op, byte* cp, int d) =>
        Avx2.GatherVector256(tp, Avx2.Add(Avx.LoadVector256(op + d), Avx2.ConvertToVector256Int32(cp + d)), 4);
}
