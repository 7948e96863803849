using System.Numerics;

namespace Squash.Core.Quantization;

/// <summary>
/// Per-dimension bit widths by greedy reverse water-filling.
/// <para>
/// High-resolution theory: a dimension of energy (variance) e_d quantised with w_d bits has distortion
/// ∝ e_d / 4^{w_d}, since each bit halves the cell width and squared error scales with width². Giving the
/// next bit to the dimension with the largest e_d / 4^{w_d} is the greedy (and, for this convex separable
/// cost, optimal integer) way to minimise Σ e_d / 4^{w_d} under Σ w_d = B.
/// </para>
/// </summary>
public static class BitAllocation
{
    /// <summary>Codes are stored one byte per dimension, so no dimension can have more than 8 bits.</summary>
    public const int MaxBitsPerDimension = 8;

    /// <summary>
    /// Distributes <paramref name="budgetBits"/> bits over the dimensions. Each step gives one bit to the
    /// eligible dimension with the largest e_d / 4^{w_d} (ties → lowest index). A dimension stops being eligible
    /// at <paramref name="maxBitsPerDim"/> bits or when 2^{w+1} would exceed <paramref name="maxCells"/>
    /// (more cells than training values is pointless); an ineligible dimension's turn costs no budget.
    /// Dimensions with energy ≤ 0 get nothing. Runs in O(D + B log D).
    /// </summary>
    /// <returns>Width per dimension; Σ widths = min(budget, Σ over positive-energy dims of the per-dim cap).</returns>
    public static int[] Allocate(ReadOnlySpan<double> energies, int budgetBits, int maxBitsPerDim = MaxBitsPerDimension, int maxCells = int.MaxValue)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(budgetBits);
        ArgumentOutOfRangeException.ThrowIfNegative(maxBitsPerDim);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(maxBitsPerDim, MaxBitsPerDimension);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCells, 1);
        foreach (double e in energies)
        {
            if (!double.IsFinite(e))
            {
                throw new ArgumentException("Energies must be finite.", nameof(energies));
            }
        }

        // 2^w ≤ maxCells ⇔ w ≤ floor(log2 maxCells): fold both caps into one per-dimension limit.
        int cap = Math.Min(maxBitsPerDim, BitOperations.Log2((uint)maxCells));
        var widths = new int[energies.Length];
        if (cap == 0 || budgetBits == 0)
        {
            return widths;
        }

        // Min-heap on (−value, index): largest remaining distortion first, lowest index on ties.
        var heap = new PriorityQueue<int, (double NegValue, int Index)>(energies.Length);
        for (int d = 0; d < energies.Length; d++)
        {
            if (energies[d] > 0)
            {
                heap.Enqueue(d, (-energies[d], d));
            }
        }

        int remaining = budgetBits;
        while (remaining > 0 && heap.TryDequeue(out int dim, out var priority))
        {
            widths[dim]++;
            remaining--;
            if (widths[dim] < cap)
            {
                // One more bit divides this dimension's distortion by 4 (exact in binary floating point).
                heap.Enqueue(dim, (priority.NegValue * 0.25, dim));
            }
        }

        return widths;
    }
}
