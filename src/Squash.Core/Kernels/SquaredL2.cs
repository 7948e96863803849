using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Squash.Core.Kernels;

/// <summary>Squared Euclidean distance Σ (a_i − b_i)², accumulated in float.</summary>
public static class SquaredL2
{
    /// <summary>Returns Σ (a_i − b_i)². Both spans must have the same length.</summary>
    public static float Distance(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (a.Length != b.Length)
        {
            throw new ArgumentException("Spans must have the same length.", nameof(b));
        }

        return Accumulate<NeverStop>(a, b, float.PositiveInfinity);
    }

    /// <summary>Decides at compile time (per generic instantiation) whether partial sums are checked.</summary>
    internal interface IStopPolicy
    {
        static abstract bool Enabled { get; }
    }

    internal readonly struct NeverStop : IStopPolicy
    {
        public static bool Enabled => false;
    }

    internal readonly struct StopAbove : IStopPolicy
    {
        public static bool Enabled => true;
    }

    /// <summary>
    /// The one accumulation loop shared by <see cref="SquaredL2"/> and <see cref="SquaredL2Bounded"/>, so both
    /// add the same terms in the same order and agree bit for bit when no early stop happens. Every term is
    /// ≥ 0 and float addition is monotone, so each accumulator lane only grows, and a partial sum reduced with
    /// the same tree as the final one is ≤ the final result (bitwise, not just approximately): stopping once
    /// it exceeds the bound never rejects a vector whose exact distance is within it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Accumulate<TPolicy>(ReadOnlySpan<float> a, ReadOnlySpan<float> b, float stopAbove)
        where TPolicy : struct, IStopPolicy
    {
        // Check every 64 elements: rare enough to be nearly free, frequent enough to abandon early.
        const int CheckMask = 63;
        ref float pa = ref MemoryMarshal.GetReference(a);
        ref float pb = ref MemoryMarshal.GetReference(b);
        nuint n = (nuint)a.Length;
        nuint i = 0;
        float sum;

        if (Vector256.IsHardwareAccelerated && n >= (nuint)Vector256<float>.Count)
        {
            // Four independent accumulators hide the FMA latency (4 cycles) behind its throughput.
            Vector256<float> acc0 = Vector256<float>.Zero, acc1 = acc0, acc2 = acc0, acc3 = acc0;
            for (; i + 32 <= n; i += 32)
            {
                Vector256<float> d0 = Vector256.LoadUnsafe(ref pa, i) - Vector256.LoadUnsafe(ref pb, i);
                Vector256<float> d1 = Vector256.LoadUnsafe(ref pa, i + 8) - Vector256.LoadUnsafe(ref pb, i + 8);
                Vector256<float> d2 = Vector256.LoadUnsafe(ref pa, i + 16) - Vector256.LoadUnsafe(ref pb, i + 16);
                Vector256<float> d3 = Vector256.LoadUnsafe(ref pa, i + 24) - Vector256.LoadUnsafe(ref pb, i + 24);
                acc0 = Vector256.MultiplyAddEstimate(d0, d0, acc0);
                acc1 = Vector256.MultiplyAddEstimate(d1, d1, acc1);
                acc2 = Vector256.MultiplyAddEstimate(d2, d2, acc2);
                acc3 = Vector256.MultiplyAddEstimate(d3, d3, acc3);
                if (TPolicy.Enabled && ((i + 32) & CheckMask) == 0)
                {
                    // Exactly the final reduction below (minus terms still to come), hence ≤ the final sum.
                    Vector256<float> partialAcc = (acc0 + acc1) + (acc2 + acc3);
                    float partial = Vector128.Sum(partialAcc.GetLower() + partialAcc.GetUpper());
                    if (partial > stopAbove)
                    {
                        return partial;
                    }
                }
            }

            for (; i + 8 <= n; i += 8)
            {
                Vector256<float> d = Vector256.LoadUnsafe(ref pa, i) - Vector256.LoadUnsafe(ref pb, i);
                acc0 = Vector256.MultiplyAddEstimate(d, d, acc0);
            }

            Vector256<float> acc = (acc0 + acc1) + (acc2 + acc3);
            Vector128<float> half = acc.GetLower() + acc.GetUpper();
            if (i + 4 <= n)
            {
                Vector128<float> d = Vector128.LoadUnsafe(ref pa, i) - Vector128.LoadUnsafe(ref pb, i);
                half = Vector128.MultiplyAddEstimate(d, d, half);
                i += 4;
            }

            sum = Vector128.Sum(half);
        }
        else if (Vector128.IsHardwareAccelerated && n >= (nuint)Vector128<float>.Count)
        {
            Vector128<float> acc0 = Vector128<float>.Zero, acc1 = acc0, acc2 = acc0, acc3 = acc0;
            for (; i + 16 <= n; i += 16)
            {
                Vector128<float> d0 = Vector128.LoadUnsafe(ref pa, i) - Vector128.LoadUnsafe(ref pb, i);
                Vector128<float> d1 = Vector128.LoadUnsafe(ref pa, i + 4) - Vector128.LoadUnsafe(ref pb, i + 4);
                Vector128<float> d2 = Vector128.LoadUnsafe(ref pa, i + 8) - Vector128.LoadUnsafe(ref pb, i + 8);
                Vector128<float> d3 = Vector128.LoadUnsafe(ref pa, i + 12) - Vector128.LoadUnsafe(ref pb, i + 12);
                acc0 = Vector128.MultiplyAddEstimate(d0, d0, acc0);
                acc1 = Vector128.MultiplyAddEstimate(d1, d1, acc1);
                acc2 = Vector128.MultiplyAddEstimate(d2, d2, acc2);
                acc3 = Vector128.MultiplyAddEstimate(d3, d3, acc3);
                if (TPolicy.Enabled && ((i + 16) & CheckMask) == 0)
                {
                    float partial = Vector128.Sum((acc0 + acc1) + (acc2 + acc3));
                    if (partial > stopAbove)
                    {
                        return partial;
                    }
                }
            }

            for (; i + 4 <= n; i += 4)
            {
                Vector128<float> d = Vector128.LoadUnsafe(ref pa, i) - Vector128.LoadUnsafe(ref pb, i);
                acc0 = Vector128.MultiplyAddEstimate(d, d, acc0);
            }

            sum = Vector128.Sum((acc0 + acc1) + (acc2 + acc3));
        }
        else
        {
            sum = 0f;
            for (; i < n; i++)
            {
                float d = Unsafe.Add(ref pa, i) - Unsafe.Add(ref pb, i);
                sum = MathF.FusedMultiplyAdd(d, d, sum);
                if (TPolicy.Enabled && ((i + 1) & CheckMask) == 0 && sum > stopAbove)
                {
                    return sum;
                }
            }

            return sum;
        }

        // Scalar tail: at most 3 elements after the vector ladder.
        for (; i < n; i++)
        {
            float d = Unsafe.Add(ref pa, i) - Unsafe.Add(ref pb, i);
            sum = MathF.FusedMultiplyAdd(d, d, sum);
        }

        return sum;
    }
}
