namespace Squash.Core.Kernels;

/// <summary>
/// Early-abandoning squared Euclidean distance for re-ranking: once the running sum exceeds the current
/// k-th best distance the candidate cannot enter the result, so the rest of the vector need not be read.
/// </summary>
public static class SquaredL2Bounded
{
    /// <summary>
    /// Returns Σ (a_i − b_i)² exactly (bit-identical to <see cref="SquaredL2.Distance"/>) unless a partial sum,
    /// checked every 64 elements, exceeds <paramref name="stopAbove"/>; then returns that partial sum, which is
    /// &gt; <paramref name="stopAbove"/> and ≤ the exact distance.
    /// </summary>
    public static float Distance(ReadOnlySpan<float> a, ReadOnlySpan<float> b, float stopAbove)
    {
        if (a.Length != b.Length)
        {
            throw new ArgumentException("Spans must have the same length.", nameof(b));
        }

        return SquaredL2.Accumulate<SquaredL2.StopAbove>(a, b, stopAbove);
    }
}
