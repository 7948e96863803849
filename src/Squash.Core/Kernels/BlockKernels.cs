using System.Numerics;
using System.Runtime.CompilerServices;

namespace Squash.Core.Kernels;

/// <summary>
/// Many-pair distance kernels for brute force: four query rows scored against one or
/// three base rows at a time, so a loaded base vector serves four queries and, with three rows, twelve independent sums
/// keep both FMA pipes busy where four would wait on the FMA's latency. Every pair is summed in the same order whichever
/// kernel scores it (one <see cref="Vector{T}"/> sum per pair, reduced, then the scalar tail), so a distance does not
/// depend on how the work was split into blocks.
/// </summary>
public static class BlockKernels
{
    /// <summary>Per-element accumulation step; a struct type parameter so the JIT specialises each kernel.</summary>
    public interface IAccumulator
    {
        static abstract Vector<float> Step(Vector<float> acc, Vector<float> x, Vector<float> q);

        static abstract float Step(float acc, float x, float q);
    }

    /// <summary>Σ (x − q)²: squared Euclidean distance, without the ‖x‖² + ‖q‖² − 2x·q expansion's cancellation.</summary>
    public readonly struct SquaredDifference : IAccumulator
    {
        public static Vector<float> Step(Vector<float> acc, Vector<float> x, Vector<float> q)
        {
            var d = x - q;
            return Vector.MultiplyAddEstimate(d, d, acc);
        }

        public static float Step(float acc, float x, float q)
        {
            float d = x - q;
            return acc + d * d;
        }
    }

    /// <summary>Σ x·q.</summary>
    public readonly struct Product : IAccumulator
    {
        public static Vector<float> Step(Vector<float> acc, Vector<float> x, Vector<float> q) =>
            Vector.MultiplyAddEstimate(x, q, acc);

        public static float Step(float acc, float x, float q) => acc + x * q;
    }

    /// <summary>Scores base rows <paramref name="x0"/>, <paramref name="x1"/>, <paramref name="x2"/> against query rows <paramref name="q0"/> … <paramref name="q3"/>: scores[4·row + query].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Score4x3<TAcc>(ref float q0, ref float q1, ref float q2, ref float q3, ref float x0, ref float x1, ref float x2, int dims,
        Span<float> scores)
        where TAcc : struct, IAccumulator
    {
        Vector<float> a0 = Vector<float>.Zero, a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0, c0 = a0, c1 = a0, c2 = a0, c3 = a0;
        int width = Vector<float>.Count;
        int i = 0;
        for (; i <= dims - width; i += width)
        {
            var xa = Vector.LoadUnsafe(ref x0, (nuint)i);
            var xb = Vector.LoadUnsafe(ref x1, (nuint)i);
            var xc = Vector.LoadUnsafe(ref x2, (nuint)i);
            var v = Vector.LoadUnsafe(ref q0, (nuint)i);
            a0 = TAcc.Step(a0, xa, v);
            b0 = TAcc.Step(b0, xb, v);
            c0 = TAcc.Step(c0, xc, v);
            v = Vector.LoadUnsafe(ref q1, (nuint)i);
            a1 = TAcc.Step(a1, xa, v);
            b1 = TAcc.Step(b1, xb, v);
            c1 = TAcc.Step(c1, xc, v);
            v = Vector.LoadUnsafe(ref q2, (nuint)i);
            a2 = TAcc.Step(a2, xa, v);
            b2 = TAcc.Step(b2, xb, v);
            c2 = TAcc.Step(c2, xc, v);
            v = Vector.LoadUnsafe(ref q3, (nuint)i);
            a3 = TAcc.Step(a3, xa, v);
            b3 = TAcc.Step(b3, xb, v);
            c3 = TAcc.Step(c3, xc, v);
        }

        scores[0] = Vector.Sum(a0);
        scores[1] = Vector.Sum(a1);
        scores[2] = Vector.Sum(a2);
        scores[3] = Vector.Sum(a3);
        scores[4] = Vector.Sum(b0);
        scores[5] = Vector.Sum(b1);
        scores[6] = Vector.Sum(b2);
        scores[7] = Vector.Sum(b3);
        scores[8] = Vector.Sum(c0);
        scores[9] = Vector.Sum(c1);
        scores[10] = Vector.Sum(c2);
        scores[11] = Vector.Sum(c3);
        for (; i < dims; i++)
        {
            float xs = Unsafe.Add(ref x0, i), xt = Unsafe.Add(ref x1, i), xu = Unsafe.Add(ref x2, i);
            float v0 = Unsafe.Add(ref q0, i), v1 = Unsafe.Add(ref q1, i), v2 = Unsafe.Add(ref q2, i), v3 = Unsafe.Add(ref q3, i);
            scores[0] = TAcc.Step(scores[0], xs, v0);
            scores[1] = TAcc.Step(scores[1], xs, v1);
            scores[2] = TAcc.Step(scores[2], xs, v2);
            scores[3] = TAcc.Step(scores[3], xs, v3);
            scores[4] = TAcc.Step(scores[4], xt, v0);
            scores[5] = TAcc.Step(scores[5], xt, v1);
            scores[6] = TAcc.Step(scores[6], xt, v2);
            scores[7] = TAcc.Step(scores[7], xt, v3);
            scores[8] = TAcc.Step(scores[8], xu, v0);
            scores[9] = TAcc.Step(scores[9], xu, v1);
            scores[10] = TAcc.Step(scores[10], xu, v2);
            scores[11] = TAcc.Step(scores[11], xu, v3);
        }
    }

    /// <summary>Scores base row <paramref name="x"/> against query rows <paramref name="q0"/> … <paramref name="q3"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Score4x1<TAcc>(ref float q0, ref float q1, ref float q2, ref float q3, ref float x, int dims, Span<float> scores)
        where TAcc : struct, IAccumulator
    {
        var a0 = Vector<float>.Zero;
        var a1 = Vector<float>.Zero;
        var a2 = Vector<float>.Zero;
        var a3 = Vector<float>.Zero;
        int width = Vector<float>.Count;
        int i = 0;
        for (; i <= dims - width; i += width)
        {
            var xv = Vector.LoadUnsafe(ref x, (nuint)i);
            a0 = TAcc.Step(a0, xv, Vector.LoadUnsafe(ref q0, (nuint)i));
            a1 = TAcc.Step(a1, xv, Vector.LoadUnsafe(ref q1, (nuint)i));
            a2 = TAcc.Step(a2, xv, Vector.LoadUnsafe(ref q2, (nuint)i));
            a3 = TAcc.Step(a3, xv, Vector.LoadUnsafe(ref q3, (nuint)i));
        }

        float s0 = Vector.Sum(a0), s1 = Vector.Sum(a1), s2 = Vector.Sum(a2), s3 = Vector.Sum(a3);
        for (; i < dims; i++)
        {
            float xs = Unsafe.Add(ref x, i);
            s0 = TAcc.Step(s0, xs, Unsafe.Add(ref q0, i));
            s1 = TAcc.Step(s1, xs, Unsafe.Add(ref q1, i));
            s2 = TAcc.Step(s2, xs, Unsafe.Add(ref q2, i));
            s3 = TAcc.Step(s3, xs, Unsafe.Add(ref q3, i));
        }

        scores[0] = s0;
        scores[1] = s1;
        scores[2] = s2;
        scores[3] = s3;
    }

    /// <summary>Scores one base row against one query row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Score1<TAcc>(ref float q, ref float x, int dims)
        where TAcc : struct, IAccumulator
    {
        var a = Vector<float>.Zero;
        int width = Vector<float>.Count;
        int i = 0;
        for (; i <= dims - width; i += width)
        {
            a = TAcc.Step(a, Vector.LoadUnsafe(ref x, (nuint)i), Vector.LoadUnsafe(ref q, (nuint)i));
        }

        float s = Vector.Sum(a);
        for (; i < dims; i++)
        {
            s = TAcc.Step(s, Unsafe.Add(ref x, i), Unsafe.Add(ref q, i));
        }

        return s;
    }
}
