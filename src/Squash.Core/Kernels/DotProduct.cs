using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Squash.Core.Kernels;

/// <summary>Dot product Σ a_i · b_i, accumulated in float.</summary>
public static class DotProduct
{
    /// <summary>Returns Σ a_i · b_i. Both spans must have the same length.</summary>
    public static float Compute(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (a.Length != b.Length)
        {
            throw new ArgumentException("Spans must have the same length.", nameof(b));
        }

        ref float pa = ref MemoryMarshal.GetReference(a);
        ref float pb = ref MemoryMarshal.GetReference(b);
        nuint n = (nuint)a.Length;
        nuint i = 0;
        float sum;

        if (Vector256.IsHardwareAccelerated && n >= (nuint)Vector256<float>.Count)
        {
            // Four independent accumulators hide the FMA latency behind its throughput.
            Vector256<float> acc0 = Vector256<float>.Zero, acc1 = acc0, acc2 = acc0, acc3 = acc0;
            for (; i + 32 <= n; i += 32)
            {
                acc0 = Vector256.MultiplyAddEstimate(Vector256.LoadUnsafe(ref pa, i), Vector256.LoadUnsafe(ref pb, i), acc0);
                acc1 = Vector256.MultiplyAddEstimate(Vector256.LoadUnsafe(ref pa, i + 8), Vector256.LoadUnsafe(ref pb, i + 8), acc1);
                acc2 = Vector256.MultiplyAddEstimate(Vector256.LoadUnsafe(ref pa, i + 16), Vector256.LoadUnsafe(ref pb, i + 16), acc2);
                acc3 = Vector256.MultiplyAddEstimate(Vector256.LoadUnsafe(ref pa, i + 24), Vector256.LoadUnsafe(ref pb, i + 24), acc3);
            }

            for (; i + 8 <= n; i += 8)
            {
                acc0 = Vector256.MultiplyAddEstimate(Vector256.LoadUnsafe(ref pa, i), Vector256.LoadUnsafe(ref pb, i), acc0);
            }

            Vector256<float> acc = (acc0 + acc1) + (acc2 + acc3);
            Vector128<float> half = acc.GetLower() + acc.GetUpper();
            if (i + 4 <= n)
            {
                half = Vector128.MultiplyAddEstimate(Vector128.LoadUnsafe(ref pa, i), Vector128.LoadUnsafe(ref pb, i), half);
                i += 4;
            }

            sum = Vector128.Sum(half);
        }
        else if (Vector128.IsHardwareAccelerated && n >= (nuint)Vector128<float>.Count)
        {
            Vector128<float> acc0 = Vector128<float>.Zero, acc1 = acc0, acc2 = acc0, acc3 = acc0;
            for (; i + 16 <= n; i += 16)
            {
                acc0 = Vector128.MultiplyAddEstimate(Vector128.LoadUnsafe(ref pa, i), Vector128.LoadUnsafe(ref pb, i), acc0);
                acc1 = Vector128.MultiplyAddEstimate(Vector128.LoadUnsafe(ref pa, i + 4), Vector128.LoadUnsafe(ref pb, i + 4), acc1);
                acc2 = Vector128.MultiplyAddEstimate(Vector128.LoadUnsafe(ref pa, i + 8), Vector128.LoadUnsafe(ref pb, i + 8), acc2);
                acc3 = Vector128.MultiplyAddEstimate(Vector128.LoadUnsafe(ref pa, i + 12), Vector128.LoadUnsafe(ref pb, i + 12), acc3);
            }

            for (; i + 4 <= n; i += 4)
            {
                acc0 = Vector128.MultiplyAddEstimate(Vector128.LoadUnsafe(ref pa, i), Vector128.LoadUnsafe(ref pb, i), acc0);
            }

            sum = Vector128.Sum((acc0 + acc1) + (acc2 + acc3));
        }
        else
        {
            sum = 0f;
        }

        // Scalar tail (at most 3 elements after the vector ladder, or everything without SIMD).
        for (; i < n; i++)
        {
            sum = MathF.FusedMultiplyAdd(Unsafe.Add(ref pa, i), Unsafe.Add(ref pb, i), sum);
        }

        return sum;
    }
}
