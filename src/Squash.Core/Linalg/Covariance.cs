using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Squash.Core.Linalg;

/// <summary>Float64 mean and population covariance of float32 rows.</summary>
public static class Covariance
{
    // Rows per packed block. Budget: a block is ceil(dims/8) panels × BlockRows × 8 doubles
    // (784 dims → 98 × 128 × 8 × 8 B ≈ 800 KB), sized to stay in the 1 MiB L2 while every
    // output panel streams over it; one j-panel (8 KB) stays in L1.
    private const int BlockRows = 128;

    /// <summary>
    /// Mean and population covariance (divided by the number of rows used) of the row-major
    /// <paramref name="count"/>×<paramref name="dims"/> <paramref name="rows"/>, restricted to the row
    /// indices in <paramref name="subset"/> when it is non-empty. Matrix is row-major dims×dims.
    /// Deterministic: every output entry sums its rows in the same order whatever the thread count.
    /// </summary>
    public static (double[] Mean, double[] Matrix) Compute(ReadOnlySpan<float> rows, int count, int dims, ReadOnlySpan<int> subset = default)
    {
        if (count < 1)
            throw new ArgumentException($"count must be at least 1 (got {count}).", nameof(count));
        if (dims < 1)
            throw new ArgumentException($"dims must be at least 1 (got {dims}).", nameof(dims));
        if (rows.Length < (long)count * dims)
            throw new ArgumentException($"rows has {rows.Length} values, fewer than count×dims = {(long)count * dims}.", nameof(rows));
        foreach (int idx in subset)
        {
            if ((uint)idx >= (uint)count)
                throw new ArgumentOutOfRangeException(nameof(subset), $"subset index {idx} is outside [0, {count}).");
        }

        int used = subset.IsEmpty ? count : subset.Length;
        var mean = ComputeMean(rows, dims, subset, used);

        int panels = (dims + 7) / 8;
        int dp = panels * 8;
        var acc = new double[(long)dp * dp <= int.MaxValue ? dp * dp : throw new ArgumentException("dims too large.", nameof(dims))];
        var packed = new double[panels * BlockRows * 8];
        int workers = Math.Max(1, Math.Min(Environment.ProcessorCount, panels));
        var opts = new ParallelOptions { MaxDegreeOfParallelism = workers };

        unsafe
        {
            fixed (float* px = rows)
            fixed (int* ps = subset)
            {
                nint xAddr = (nint)px, sAddr = (nint)ps;
                bool hasSubset = !subset.IsEmpty;
                for (int b0 = 0; b0 < used; b0 += BlockRows)
                {
                    int k = Math.Min(BlockRows, used - b0);
                    int start = b0;

                    // Centre and pack: panel p holds rows r as 8 consecutive doubles (columns 8p..8p+7, zero padded).
                    int packChunks = Math.Min(workers, k);
                    Parallel.For(0, packChunks, opts, w =>
                    {
                        int r0 = (int)((long)k * w / packChunks), r1 = (int)((long)k * (w + 1) / packChunks);
                        for (int r = r0; r < r1; r++)
                        {
                            int src = hasSubset ? ((int*)sAddr)[start + r] : start + r;
                            PackRow((float*)xAddr + (long)src * dims, dims, mean, packed, r);
                        }
                    });

                    // Output panels are owned by one worker each, so no reduction is needed. Largest first for balance.
                    int next = -1;
                    Parallel.For(0, workers, opts, _ =>
                    {
                        fixed (double* pk = packed)
                        fixed (double* pc = acc)
                        {
                            int item;
                            while ((item = Interlocked.Increment(ref next)) < panels)
                            {
                                int jp = panels - 1 - item;
                                double* bPanel = pk + jp * BlockRows * 8;
                                for (int ip = 0; ip <= jp; ip++)
                                {
                                    double* aPanel = pk + ip * BlockRows * 8;
                                    double* c = pc + (long)ip * 8 * dp + jp * 8;
                                    Kernel4x8(aPanel, bPanel, k, c, dp);
                                    Kernel4x8(aPanel + 4, bPanel, k, c + 4 * dp, dp);
                                }
                            }
                        }
                    });
                }
            }
        }

        var matrix = new double[dims * dims];
        double inv = 1.0 / used;
        for (int i = 0; i < dims; i++)
        {
            for (int j = i; j < dims; j++)
            {
                double v = acc[i * dp + j] * inv;
                matrix[i * dims + j] = v;
                matrix[j * dims + i] = v;
            }
        }
        return (mean, matrix);
    }

    private static double[] ComputeMean(ReadOnlySpan<float> rows, int dims, ReadOnlySpan<int> subset, int used)
    {
        var sum = new double[dims];
        for (int r = 0; r < used; r++)
        {
            int src = subset.IsEmpty ? r : subset[r];
            var row = rows.Slice(src * dims, dims);
            int j = 0;
            if (Avx.IsSupported)
            {
                ref float x0 = ref MemoryMarshal.GetReference(row);
                ref double s0 = ref sum[0];
                for (; j + 4 <= dims; j += 4)
                {
                    var v = Avx.ConvertToVector256Double(Vector128.LoadUnsafe(ref x0, (nuint)j));
                    (Vector256.LoadUnsafe(ref s0, (nuint)j) + v).StoreUnsafe(ref s0, (nuint)j);
                }
            }
            for (; j < dims; j++)
                sum[j] += row[j];
        }
        for (int j = 0; j < dims; j++)
            sum[j] /= used;
        return sum;
    }

    private static unsafe void PackRow(float* x, int dims, double[] mean, double[] packed, int r)
    {
        int panels = (dims + 7) / 8;
        for (int p = 0; p < panels; p++)
        {
            int baseIdx = (p * BlockRows + r) * 8;
            int c0 = p * 8;
            int width = Math.Min(8, dims - c0);
            for (int u = 0; u < width; u++)
                packed[baseIdx + u] = x[c0 + u] - mean[c0 + u];
            for (int u = width; u < 8; u++)
                packed[baseIdx + u] = 0;
        }
    }

    // C[0..4, 0..8] += Σ_r a[r, 0..4]ᵀ · b[r, 0..8]; a and b are packed panels with a stride of 8 doubles per row.
    // 8 accumulators + 2 loads + 1 broadcast keep everything in the 16 ymm registers.
    private static unsafe void Kernel4x8(double* a, double* b, int k, double* c, int ldc)
    {
        var c00 = Vector256.Load(c);
        var c01 = Vector256.Load(c + 4);
        var c10 = Vector256.Load(c + ldc);
        var c11 = Vector256.Load(c + ldc + 4);
        var c20 = Vector256.Load(c + 2 * ldc);
        var c21 = Vector256.Load(c + 2 * ldc + 4);
        var c30 = Vector256.Load(c + 3 * ldc);
        var c31 = Vector256.Load(c + 3 * ldc + 4);
        for (int r = 0; r < k; r++)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 4);
            var a0 = Vector256.Create(a[0]);
            c00 = Vector256.FusedMultiplyAdd(a0, b0, c00);
            c01 = Vector256.FusedMultiplyAdd(a0, b1, c01);
            var a1 = Vector256.Create(a[1]);
            c10 = Vector256.FusedMultiplyAdd(a1, b0, c10);
            c11 = Vector256.FusedMultiplyAdd(a1, b1, c11);
            var a2 = Vector256.Create(a[2]);
            c20 = Vector256.FusedMultiplyAdd(a2, b0, c20);
            c21 = Vector256.FusedMultiplyAdd(a2, b1, c21);
            var a3 = Vector256.Create(a[3]);
            c30 = Vector256.FusedMultiplyAdd(a3, b0, c30);
            c31 = Vector256.FusedMultiplyAdd(a3, b1, c31);
            a += 8;
            b += 8;
        }
        c00.Store(c);
        c01.Store(c + 4);
        c10.Store(c + ldc);
        c11.Store(c + ldc + 4);
        c20.Store(c + 2 * ldc);
        c21.Store(c + 2 * ldc + 4);
        c30.Store(c + 3 * ldc);
        c31.Store(c + 3 * ldc + 4);
    }
}
