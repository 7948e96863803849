using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Squash.Core.Linalg;

/// <summary>
/// Karhunen–Loève transform (PCA rotation): z_i = Basis_row_i · (x − Mean), rows sorted by descending eigenvalue.
/// Mean and Basis are exposed for serialisation; treat them as read-only (projection uses an internal padded copy).
/// </summary>
public sealed class Klt
{
    // Threshold for centring a single vector on the stack (16 KB) instead of renting from the pool.
    private const int StackLimit = 4096;

    // Rows centred per parallel work item. Budget: 48 × stride floats (784 dims → 150 KB) in L2,
    // while the 4 basis rows of the current output tile (784 dims → 12.5 KB) stay in L1.
    private const int RowBlock = 48;

    private readonly int _stride;          // InputDims rounded up to 8 (one Vector256<float>)
    private readonly int _paddedOutputs;   // OutputDims rounded up to 4 (one output tile)
    private readonly float[] _basisPadded; // _paddedOutputs × _stride, zero padded

    private Klt(float[] mean, float[] basis, double[] eigenvalues, int inputDims, int outputDims)
    {
        InputDims = inputDims;
        OutputDims = outputDims;
        Mean = mean;
        Basis = basis;
        Eigenvalues = eigenvalues;
        _stride = (inputDims + 7) & ~7;
        _paddedOutputs = (outputDims + 3) & ~3;
        _basisPadded = new float[_paddedOutputs * _stride];
        for (int i = 0; i < outputDims; i++)
            basis.AsSpan(i * inputDims, inputDims).CopyTo(_basisPadded.AsSpan(i * _stride));
    }

    public int InputDims { get; }

    public int OutputDims { get; }

    /// <summary>Mean of the fitted rows (InputDims).</summary>
    public float[] Mean { get; }

    /// <summary>OutputDims × InputDims row-major; row i is the unit eigenvector of Eigenvalues[i].</summary>
    public float[] Basis { get; }

    /// <summary>All InputDims eigenvalues of the population covariance, descending.</summary>
    public double[] Eigenvalues { get; }

    /// <summary>Fits the KLT on the rows (or the listed subset) and keeps the leading <paramref name="outputDims"/> axes.</summary>
    public static Klt Fit(ReadOnlySpan<float> rows, int count, int dims, int outputDims, ReadOnlySpan<int> subset = default)
    {
        if (outputDims < 1 || outputDims > dims)
            throw new ArgumentException($"outputDims must be in [1, dims={dims}] (got {outputDims}).", nameof(outputDims));
        var (mean, cov) = Covariance.Compute(rows, count, dims, subset);
        var (values, vectors) = SymmetricEigen.Decompose(cov, dims);

        var basis = new float[outputDims * dims];
        for (int i = 0; i < outputDims; i++)
        {
            for (int k = 0; k < dims; k++)
                basis[i * dims + k] = (float)vectors[k * dims + i];
        }
        var meanF = new float[dims];
        for (int k = 0; k < dims; k++)
            meanF[k] = (float)mean[k];
        return new Klt(meanF, basis, values, dims, outputDims);
    }

    /// <summary>Rebuilds a KLT from stored parts after checking their shapes and values.</summary>
    public static Klt FromParts(float[] mean, float[] basis, double[] eigenvalues, int inputDims, int outputDims)
    {
        ArgumentNullException.ThrowIfNull(mean);
        ArgumentNullException.ThrowIfNull(basis);
        ArgumentNullException.ThrowIfNull(eigenvalues);
        if (inputDims < 1)
            throw new ArgumentException($"inputDims must be at least 1 (got {inputDims}).", nameof(inputDims));
        if (outputDims < 1 || outputDims > inputDims)
            throw new ArgumentException($"outputDims must be in [1, {inputDims}] (got {outputDims}).", nameof(outputDims));
        if (mean.Length != inputDims)
            throw new ArgumentException($"mean must have {inputDims} values (got {mean.Length}).", nameof(mean));
        if (basis.Length != (long)outputDims * inputDims)
            throw new ArgumentException($"basis must have {(long)outputDims * inputDims} values (got {basis.Length}).", nameof(basis));
        if (eigenvalues.Length != inputDims)
            throw new ArgumentException($"eigenvalues must have {inputDims} values (got {eigenvalues.Length}).", nameof(eigenvalues));
        foreach (float v in mean)
        {
            if (!float.IsFinite(v))
                throw new ArgumentException("mean contains a non-finite value.", nameof(mean));
        }
        foreach (float v in basis)
        {
            if (!float.IsFinite(v))
                throw new ArgumentException("basis contains a non-finite value.", nameof(basis));
        }
        foreach (double v in eigenvalues)
        {
            if (!double.IsFinite(v))
                throw new ArgumentException("eigenvalues contains a non-finite value.", nameof(eigenvalues));
        }
        return new Klt(mean, basis, eigenvalues, inputDims, outputDims);
    }

    /// <summary>z = Basis · (x − Mean). Allocation-free for InputDims ≤ 4096 (pool-rented above).</summary>
    public void Project(ReadOnlySpan<float> x, Span<float> z)
    {
        if (x.Length != InputDims)
            throw new ArgumentException($"x must have {InputDims} values (got {x.Length}).", nameof(x));
        if (z.Length < OutputDims)
            throw new ArgumentException($"z must have at least {OutputDims} values (got {z.Length}).", nameof(z));

        float[]? rented = null;
        Span<float> centred = _stride <= StackLimit
            ? stackalloc float[_stride]
            : (rented = ArrayPool<float>.Shared.Rent(_stride)).AsSpan(0, _stride);
        Centre(x, Mean, centred);

        Span<float> tile = stackalloc float[4];
        for (int o = 0; o < _paddedOutputs; o += 4)
        {
            Kernel1x4(centred, _basisPadded.AsSpan(o * _stride), _stride, tile);
            int n = Math.Min(4, OutputDims - o);
            tile[..n].CopyTo(z[o..]);
        }
        if (rented != null)
            ArrayPool<float>.Shared.Return(rented);
    }

    /// <summary>
    /// Projects <paramref name="count"/> row-major rows into <paramref name="output"/> (count × OutputDims).
    /// Blocked and parallel over row blocks; bitwise identical to <see cref="Project"/> on each row because every
    /// output uses the same per-lane FMA chain and the same horizontal sum.
    /// </summary>
    public void ProjectMany(ReadOnlySpan<float> rows, int count, Span<float> output)
    {
        if (count < 0)
            throw new ArgumentException($"count must be non-negative (got {count}).", nameof(count));
        if (rows.Length < (long)count * InputDims)
            throw new ArgumentException($"rows must have at least {(long)count * InputDims} values (got {rows.Length}).", nameof(rows));
        if (output.Length < (long)count * OutputDims)
            throw new ArgumentException($"output must have at least {(long)count * OutputDims} values (got {output.Length}).", nameof(output));
        if (count == 0)
            return;

        int blocks = (count + RowBlock - 1) / RowBlock;
        unsafe
        {
            fixed (float* px = rows)
            fixed (float* pz = output)
            {
                nint xAddr = (nint)px, zAddr = (nint)pz;
                Parallel.For(
                    0,
                    blocks,
                    () => new float[RowBlock * _stride],
                    (b, _, buffer) =>
                    {
                        ProjectBlock((float*)xAddr, (float*)zAddr, count, b * RowBlock, buffer);
                        return buffer;
                    },
                    _ => { });
            }
        }
    }

    private unsafe void ProjectBlock(float* x, float* z, int count, int r0, float[] buffer)
    {
        int rows = Math.Min(RowBlock, count - r0);
        int paddedRows = (rows + 2) / 3 * 3;
        int inDims = InputDims, outDims = OutputDims, stride = _stride;
        for (int r = 0; r < paddedRows; r++)
        {
            var dst = buffer.AsSpan(r * stride, stride);
            if (r < rows)
                Centre(new ReadOnlySpan<float>(x + (long)(r0 + r) * inDims, inDims), Mean, dst);
            else
                dst.Clear();
        }

        Span<float> tile = stackalloc float[12];
        for (int o = 0; o < _paddedOutputs; o += 4)
        {
            var basisTile = _basisPadded.AsSpan(o * stride, 4 * stride);
            int nOut = Math.Min(4, outDims - o);
            for (int r = 0; r < paddedRows; r += 3)
            {
                Kernel3x4(buffer.AsSpan(r * stride, 3 * stride), basisTile, stride, tile);
                int nRows = Math.Min(3, rows - r);
                for (int t = 0; t < nRows; t++)
                {
                    float* dst = z + (long)(r0 + r + t) * outDims + o;
                    for (int u = 0; u < nOut; u++)
                        dst[u] = tile[t * 4 + u];
                }
            }
        }
    }

    // x − Mean into a zero-padded buffer; elementwise, so identical in the single and batched paths.
    private static void Centre(ReadOnlySpan<float> x, float[] mean, Span<float> dst)
    {
        int n = x.Length;
        int k = 0;
        ref float xr = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(x);
        ref float mr = ref mean[0];
        ref float dr = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(dst);
        for (; k + 8 <= n; k += 8)
            (Vector256.LoadUnsafe(ref xr, (nuint)k) - Vector256.LoadUnsafe(ref mr, (nuint)k)).StoreUnsafe(ref dr, (nuint)k);
        for (; k < n; k++)
            dst[k] = x[k] - mean[k];
        dst[n..].Clear();
    }

    // Fixed reduction order shared by both paths (lanes i and i+4 first, then pairs).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float HorizontalSum(Vector256<float> v)
    {
        var h = v.GetLower() + v.GetUpper();
        return (h.GetElement(0) + h.GetElement(2)) + (h.GetElement(1) + h.GetElement(3));
    }

    // One centred row against 4 padded basis rows; each output is its own FMA chain over k in steps of 8.
    private static void Kernel1x4(ReadOnlySpan<float> x, ReadOnlySpan<float> basis, int stride, Span<float> result)
    {
        ref float xr = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(x);
        ref float b0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(basis);
        ref float b1 = ref Unsafe.Add(ref b0, stride);
        ref float b2 = ref Unsafe.Add(ref b0, 2 * stride);
        ref float b3 = ref Unsafe.Add(ref b0, 3 * stride);
        var a0 = Vector256<float>.Zero;
        var a1 = Vector256<float>.Zero;
        var a2 = Vector256<float>.Zero;
        var a3 = Vector256<float>.Zero;
        for (nuint k = 0; k < (nuint)stride; k += 8)
        {
            var xv = Vector256.LoadUnsafe(ref xr, k);
            a0 = Vector256.FusedMultiplyAdd(xv, Vector256.LoadUnsafe(ref b0, k), a0);
            a1 = Vector256.FusedMultiplyAdd(xv, Vector256.LoadUnsafe(ref b1, k), a1);
            a2 = Vector256.FusedMultiplyAdd(xv, Vector256.LoadUnsafe(ref b2, k), a2);
            a3 = Vector256.FusedMultiplyAdd(xv, Vector256.LoadUnsafe(ref b3, k), a3);
        }
        result[0] = HorizontalSum(a0);
        result[1] = HorizontalSum(a1);
        result[2] = HorizontalSum(a2);
        result[3] = HorizontalSum(a3);
    }

    // 3 centred rows × 4 basis rows: 12 accumulators, each the same chain Kernel1x4 computes. result is [row*4 + out].
    private static void Kernel3x4(ReadOnlySpan<float> x, ReadOnlySpan<float> basis, int stride, Span<float> result)
    {
        ref float x0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(x);
        ref float x1 = ref Unsafe.Add(ref x0, stride);
        ref float x2 = ref Unsafe.Add(ref x0, 2 * stride);
        ref float b0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(basis);
        ref float b1 = ref Unsafe.Add(ref b0, stride);
        ref float b2 = ref Unsafe.Add(ref b0, 2 * stride);
        ref float b3 = ref Unsafe.Add(ref b0, 3 * stride);
        Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector256<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector256<float> a20 = default, a21 = default, a22 = default, a23 = default;
        for (nuint k = 0; k < (nuint)stride; k += 8)
        {
            var xv0 = Vector256.LoadUnsafe(ref x0, k);
            var xv1 = Vector256.LoadUnsafe(ref x1, k);
            var xv2 = Vector256.LoadUnsafe(ref x2, k);
            var bv = Vector256.LoadUnsafe(ref b0, k);
            a00 = Vector256.FusedMultiplyAdd(xv0, bv, a00);
            a10 = Vector256.FusedMultiplyAdd(xv1, bv, a10);
            a20 = Vector256.FusedMultiplyAdd(xv2, bv, a20);
            bv = Vector256.LoadUnsafe(ref b1, k);
            a01 = Vector256.FusedMultiplyAdd(xv0, bv, a01);
            a11 = Vector256.FusedMultiplyAdd(xv1, bv, a11);
            a21 = Vector256.FusedMultiplyAdd(xv2, bv, a21);
            bv = Vector256.LoadUnsafe(ref b2, k);
            a02 = Vector256.FusedMultiplyAdd(xv0, bv, a02);
            a12 = Vector256.FusedMultiplyAdd(xv1, bv, a12);
            a22 = Vector256.FusedMultiplyAdd(xv2, bv, a22);
            bv = Vector256.LoadUnsafe(ref b3, k);
            a03 = Vector256.FusedMultiplyAdd(xv0, bv, a03);
            a13 = Vector256.FusedMultiplyAdd(xv1, bv, a13);
            a23 = Vector256.FusedMultiplyAdd(xv2, bv, a23);
        }
        result[0] = HorizontalSum(a00);
        result[1] = HorizontalSum(a01);
        result[2] = HorizontalSum(a02);
        result[3] = HorizontalSum(a03);
        result[4] = HorizontalSum(a10);
        result[5] = HorizontalSum(a11);
        result[6] = HorizontalSum(a12);
        result[7] = HorizontalSum(a13);
        result[8] = HorizontalSum(a20);
        result[9] = HorizontalSum(a21);
        result[10] = HorizontalSum(a22);
        result[11] = HorizontalSum(a23);
    }
}
