using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Squash.Core.Quantization;

/// <summary>
/// The "segment" layout of OSQ codes. Per vector, the codes of all dimensions are concatenated MSB-first with
/// their widths (0..8 bits; width-0 dimensions contribute nothing) into a bit string of <see cref="TotalBits"/>,
/// padded with zeros to <see cref="SegmentCount"/> bytes; segment s is bits [8s, 8s + 8) of that string.
/// Storage is segment-major ("bit planes"): planes[s · count + i] is segment s of vector i, so one dimension of
/// all vectors is read from one or two contiguous planes.
/// <para>
/// Decoding a dimension that starts at bit offset o of segment s with width w: let hi = plane s and
/// lo = plane s + 1 (the 16-bit word hi·256 + lo holds the code at bits [16 − o − w, 16 − o)).
/// If o + w ≤ 8 the code sits in hi alone: code = (hi ≫ r) &amp; mask with r = 8 − o − w.
/// Otherwise t = 16 − o − w ∈ [1, 7] and code = ((hi ≪ (8 − t)) | (lo ≫ t)) &amp; mask in 8-bit arithmetic.
/// Both are ((hi ≪ L) | (lo' ≫ R)) &amp; mask if the single-segment case takes lo' = hi and L = (8 − r) mod 8:
/// hi ≪ L only fills bits ≥ 8 − r ≥ w (or equals hi ≫ 0 when r = 0), which the mask drops. One branch-free
/// byte formula per dimension, which is what the SIMD paths evaluate 16 or 32 vectors at a time.
/// </para>
/// </summary>
public sealed class BitPlaneLayout
{
    /// <summary>Codes are bytes, so no dimension is wider than 8 bits.</summary>
    public const int MaxWidth = 8;

    private readonly byte[] _widths;
    private readonly int[] _startBits;
    private readonly DimPlan[] _plans;

    /// <summary>Creates the layout for the given per-dimension widths (each 0..8).</summary>
    public BitPlaneLayout(ReadOnlySpan<int> widths)
    {
        _widths = new byte[widths.Length];
        _startBits = new int[widths.Length];
        _plans = new DimPlan[widths.Length];
        long bits = 0;
        for (int d = 0; d < widths.Length; d++)
        {
            int w = widths[d];
            if ((uint)w > MaxWidth)
            {
                throw new ArgumentOutOfRangeException(nameof(widths), w, $"Width of dimension {d} must be in 0..{MaxWidth}.");
            }

            _widths[d] = (byte)w;
            _startBits[d] = (int)bits;
            bits += w;
            if (bits > int.MaxValue - 7)
            {
                throw new ArgumentException("Total code length is too large.", nameof(widths));
            }
        }

        TotalBits = (int)bits;
        SegmentCount = (TotalBits + 7) >> 3;
        for (int d = 0; d < widths.Length; d++)
        {
            _plans[d] = PlanFor(_startBits[d] >> 3, _startBits[d] & 7, _widths[d]);
        }
    }

    /// <summary>Number of dimensions (including width-0 ones).</summary>
    public int Dimensions => _widths.Length;

    /// <summary>Sum of the widths: bits per vector before padding.</summary>
    public int TotalBits { get; }

    /// <summary>Bytes per vector = ceil(TotalBits / 8) = number of bit planes.</summary>
    public int SegmentCount { get; }

    /// <summary>Segment holding the most significant bit of <paramref name="dim"/>'s code.</summary>
    public int StartSegment(int dim) => _startBits[dim] >> 3;

    /// <summary>Bit offset (0 = MSB) of <paramref name="dim"/>'s code inside its start segment.</summary>
    public int BitOffset(int dim) => _startBits[dim] & 7;

    /// <summary>Code width of <paramref name="dim"/> in bits (0..8).</summary>
    public int Width(int dim) => _widths[dim];

    /// <summary>
    /// Packs <paramref name="count"/> rows of codes (row-major, one byte per dimension, each &lt; 2^width) into
    /// <paramref name="planes"/> (SegmentCount × count, segment-major).
    /// </summary>
    public void Pack(ReadOnlySpan<byte> codes, int count, Span<byte> planes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        int dims = Dimensions;
        if (codes.Length < (long)count * dims)
        {
            throw new ArgumentException("Codes span is shorter than count × Dimensions.", nameof(codes));
        }

        if (planes.Length < (long)SegmentCount * count)
        {
            throw new ArgumentException("Planes span is shorter than SegmentCount × count.", nameof(planes));
        }

        byte[] widths = _widths;
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> row = codes.Slice(i * dims, dims);
            // Only the low (pending + 8) bits of the accumulator matter; older bits shift out harmlessly.
            ulong acc = 0;
            int pending = 0;
            int plane = i;
            for (int d = 0; d < row.Length; d++)
            {
                int w = widths[d];
                uint code = row[d];
                if ((code >> w) != 0)
                {
                    throw new ArgumentException($"Code {code} of vector {i}, dimension {d} does not fit in {w} bits.", nameof(codes));
                }

                acc = (acc << w) | code;
                pending += w;
                if (pending >= 8)
                {
                    pending -= 8;
                    planes[plane] = (byte)(acc >> pending);
                    plane += count;
                }
            }

            if (pending > 0)
            {
                planes[plane] = (byte)(acc << (8 - pending));
            }
        }
    }

    /// <summary>Decodes dimension <paramref name="dim"/> of all <paramref name="count"/> vectors into <paramref name="codes"/>.</summary>
    public void ExtractDimension(ReadOnlySpan<byte> planes, int count, int dim, Span<byte> codes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if ((uint)dim >= (uint)Dimensions)
        {
            throw new ArgumentOutOfRangeException(nameof(dim), dim, "Dimension out of range.");
        }

        CheckPlanes(planes, count);
        if (codes.Length < count)
        {
            throw new ArgumentException("Codes span is shorter than count.", nameof(codes));
        }

        DimPlan p = _plans[dim];
        if (p.Mask == 0)
        {
            codes[..count].Clear();
            return;
        }

        ref byte hi = ref Unsafe.Add(ref MemoryMarshal.GetReference(planes), (nint)p.HiPlane * count);
        ref byte lo = ref Unsafe.Add(ref MemoryMarshal.GetReference(planes), (nint)p.LoPlane * count);
        ref byte dst = ref MemoryMarshal.GetReference(codes);
        int left = p.ShiftLeft, right = p.ShiftRight;
        nuint n = (nuint)count;
        nuint i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<byte> mask = Vector256.Create(p.Mask);
            for (; i + 32 <= n; i += 32)
            {
                Vector256<byte> h = Vector256.LoadUnsafe(ref hi, i);
                Vector256<byte> l = Vector256.LoadUnsafe(ref lo, i);
                (((h << left) | (l >> right)) & mask).StoreUnsafe(ref dst, i);
            }
        }

        if (Vector128.IsHardwareAccelerated)
        {
            Vector128<byte> mask = Vector128.Create(p.Mask);
            for (; i + 16 <= n; i += 16)
            {
                Vector128<byte> h = Vector128.LoadUnsafe(ref hi, i);
                Vector128<byte> l = Vector128.LoadUnsafe(ref lo, i);
                (((h << left) | (l >> right)) & mask).StoreUnsafe(ref dst, i);
            }
        }

        for (; i < n; i++)
        {
            Unsafe.Add(ref dst, i) = (byte)(((Unsafe.Add(ref hi, i) << left) | (Unsafe.Add(ref lo, i) >> right)) & p.Mask);
        }
    }

    /// <summary>
    /// Decodes every dimension of all <paramref name="count"/> vectors into <paramref name="codes"/>
    /// (count × Dimensions, row-major). Blocks of 32 (AVX2) or 16 (SSE2) vectors × 16 dimensions are decoded as
    /// columns, one SIMD formula per dimension, then transposed in registers to rows.
    /// </summary>
    public void ExtractAll(ReadOnlySpan<byte> planes, int count, Span<byte> codes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        CheckPlanes(planes, count);
        int dims = Dimensions;
        if (codes.Length < (long)count * dims)
        {
            throw new ArgumentException("Codes span is shorter than count × Dimensions.", nameof(codes));
        }

        if (count == 0 || dims == 0)
        {
            return;
        }

        if (SegmentCount == 0)
        {
            codes[..(count * dims)].Clear();
            return;
        }

        ref byte src = ref MemoryMarshal.GetReference(planes);
        ref byte dst = ref MemoryMarshal.GetReference(codes);
        int done = 0;
        if (dims >= 16)
        {
            if (Avx2.IsSupported)
            {
                done = ExtractBlocksAvx2(ref src, count, ref dst);
            }

            if (Sse2.IsSupported)
            {
                done = ExtractBlocksSse2(ref src, count, ref dst, done);
            }
        }

        for (int i = done; i < count; i++)
        {
            DecodeRowScalar(ref src, count, i, 0, ref dst);
        }
    }

    private void CheckPlanes(ReadOnlySpan<byte> planes, int count)
    {
        if (planes.Length < (long)SegmentCount * count)
        {
            throw new ArgumentException("Planes span is shorter than SegmentCount × count.", nameof(planes));
        }
    }

    /// <summary>Per-dimension constants of the branch-free decode formula (see the class remarks).</summary>
    private readonly record struct DimPlan(int HiPlane, int LoPlane, int ShiftLeft, int ShiftRight, byte Mask);

    private static DimPlan PlanFor(int segment, int offset, int width)
    {
        if (width == 0)
        {
            // Mask 0 yields 0 from any plane; plane 0 always exists when something is decoded.
            return new DimPlan(0, 0, 0, 0, 0);
        }

        byte mask = (byte)((1 << width) - 1);
        if (offset + width <= 8)
        {
            int r = 8 - offset - width;
            return new DimPlan(segment, segment, (8 - r) & 7, r, mask);
        }

        int t = 16 - offset - width;
        return new DimPlan(segment, segment + 1, 8 - t, t, mask);
    }

    /// <summary>Decodes dimensions [fromDim, Dimensions) of vector <paramref name="i"/> one at a time.</summary>
    private void DecodeRowScalar(ref byte planes, int count, int i, int fromDim, ref byte codes)
    {
        DimPlan[] plans = _plans;
        ref byte row = ref Unsafe.Add(ref codes, (nint)i * plans.Length);
        for (int d = fromDim; d < plans.Length; d++)
        {
            DimPlan p = plans[d];
            int h = Unsafe.Add(ref planes, ((nint)p.HiPlane * count) + i);
            int l = Unsafe.Add(ref planes, ((nint)p.LoPlane * count) + i);
            Unsafe.Add(ref row, d) = (byte)(((h << p.ShiftLeft) | (l >> p.ShiftRight)) & p.Mask);
        }
    }

    private int ExtractBlocksAvx2(ref byte planes, int count, ref byte codes)
    {
        DimPlan[] plans = _plans;
        int dims = plans.Length;
        int fullDims = dims & ~15;
        Span<Vector256<byte>> bufferA = stackalloc Vector256<byte>[16];
        Span<Vector256<byte>> bufferB = stackalloc Vector256<byte>[16];
        ref Vector256<byte> a = ref MemoryMarshal.GetReference(bufferA);
        ref Vector256<byte> b = ref MemoryMarshal.GetReference(bufferB);
        int i0 = 0;
        for (; i0 + 32 <= count; i0 += 32)
        {
            for (int d0 = 0; d0 < fullDims; d0 += 16)
            {
                // a[k] = codes of dimension d0 + k for vectors i0..i0+31 (one byte lane per vector).
                for (int k = 0; k < 16; k++)
                {
                    DimPlan p = plans[d0 + k];
                    Vector256<byte> h = Vector256.LoadUnsafe(ref planes, ((nuint)p.HiPlane * (nuint)count) + (nuint)i0);
                    Vector256<byte> l = Vector256.LoadUnsafe(ref planes, ((nuint)p.LoPlane * (nuint)count) + (nuint)i0);
                    Unsafe.Add(ref a, k) = ((h << p.ShiftLeft) | (l >> p.ShiftRight)) & Vector256.Create(p.Mask);
                }

                // Each round maps (register, lane) bit string r3r2r1r0 p3p2p1p0 to r2r1r0p3 p2p1p0r3, a rotation by
                // one; four rounds swap register and lane index, i.e. transpose each 128-bit half as a 16×16 tile.
                TransposeRound256(ref a, ref b);
                TransposeRound256(ref b, ref a);
                TransposeRound256(ref a, ref b);
                TransposeRound256(ref b, ref a);

                // Low half of a[j] is vector i0 + j, high half is vector i0 + 16 + j, dimensions d0..d0+15.
                ref byte outLow = ref Unsafe.Add(ref codes, ((nint)i0 * dims) + d0);
                ref byte outHigh = ref Unsafe.Add(ref outLow, (nint)16 * dims);
                for (int j = 0; j < 16; j++)
                {
                    Vector256<byte> row = Unsafe.Add(ref a, j);
                    row.GetLower().StoreUnsafe(ref outLow, (nuint)(j * dims));
                    row.GetUpper().StoreUnsafe(ref outHigh, (nuint)(j * dims));
                }
            }

            if (fullDims < dims)
            {
                for (int i = i0; i < i0 + 32; i++)
                {
                    DecodeRowScalar(ref planes, count, i, fullDims, ref codes);
                }
            }
        }

        return i0;
    }

    private int ExtractBlocksSse2(ref byte planes, int count, ref byte codes, int start)
    {
        DimPlan[] plans = _plans;
        int dims = plans.Length;
        int fullDims = dims & ~15;
        Span<Vector128<byte>> bufferA = stackalloc Vector128<byte>[16];
        Span<Vector128<byte>> bufferB = stackalloc Vector128<byte>[16];
        ref Vector128<byte> a = ref MemoryMarshal.GetReference(bufferA);
        ref Vector128<byte> b = ref MemoryMarshal.GetReference(bufferB);
        int i0 = start;
        for (; i0 + 16 <= count; i0 += 16)
        {
            for (int d0 = 0; d0 < fullDims; d0 += 16)
            {
                for (int k = 0; k < 16; k++)
                {
                    DimPlan p = plans[d0 + k];
                    Vector128<byte> h = Vector128.LoadUnsafe(ref planes, ((nuint)p.HiPlane * (nuint)count) + (nuint)i0);
                    Vector128<byte> l = Vector128.LoadUnsafe(ref planes, ((nuint)p.LoPlane * (nuint)count) + (nuint)i0);
                    Unsafe.Add(ref a, k) = ((h << p.ShiftLeft) | (l >> p.ShiftRight)) & Vector128.Create(p.Mask);
                }

                TransposeRound128(ref a, ref b);
                TransposeRound128(ref b, ref a);
                TransposeRound128(ref a, ref b);
                TransposeRound128(ref b, ref a);

                ref byte output = ref Unsafe.Add(ref codes, ((nint)i0 * dims) + d0);
                for (int j = 0; j < 16; j++)
                {
                    Unsafe.Add(ref a, j).StoreUnsafe(ref output, (nuint)(j * dims));
                }
            }

            if (fullDims < dims)
            {
                for (int i = i0; i < i0 + 16; i++)
                {
                    DecodeRowScalar(ref planes, count, i, fullDims, ref codes);
                }
            }
        }

        return i0;
    }

    /// <summary>dst[2m + h] = interleave-half-h(src[m], src[m + 8]) bytewise, within each 128-bit lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void TransposeRound256(ref Vector256<byte> src, ref Vector256<byte> dst)
    {
        for (int m = 0; m < 8; m++)
        {
            Vector256<byte> x = Unsafe.Add(ref src, m);
            Vector256<byte> y = Unsafe.Add(ref src, m + 8);
            Unsafe.Add(ref dst, 2 * m) = Avx2.UnpackLow(x, y);
            Unsafe.Add(ref dst, (2 * m) + 1) = Avx2.UnpackHigh(x, y);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void TransposeRound128(ref Vector128<byte> src, ref Vector128<byte> dst)
    {
        for (int m = 0; m < 8; m++)
        {
            Vector128<byte> x = Unsafe.Add(ref src, m);
            Vector128<byte> y = Unsafe.Add(ref src, m + 8);
            Unsafe.Add(ref dst, 2 * m) = Sse2.UnpackLow(x, y);
            Unsafe.Add(ref dst, (2 * m) + 1) = Sse2.UnpackHigh(x, y);
        }
    }
}
