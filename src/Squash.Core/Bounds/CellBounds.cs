namespace Squash.Core.Bounds;

/// <summary>
/// Distance bounds between a query and a quantized vector, one coded dimension at a time.
/// For dimension d the vector lies in the cell [b_lo, b_hi) of its code, so with q the query's coordinate
/// <code>
///   lb_d = max(b_lo − q, q − b_hi, 0)        (0 when q is inside the cell)
///   ub_d = max(|q − b_lo|, |q − b_hi|)
/// </code>
/// and Σ lb_d² ≤ Σ (q_d − x_d)² ≤ Σ ub_d². Boundaries of dim d start at offsets[d]. These are the
/// double-precision reference forms (tests, diagnostics); the scan uses <see cref="LowerBoundTable"/>.
/// </summary>
public static class CellBounds
{
    /// <summary>Σ_d lb_d² without early exit (scalar reference, used by tests and diagnostics).</summary>
    public static double LowerBoundReference(ReadOnlySpan<float> q, ReadOnlySpan<byte> cells, ReadOnlySpan<float> boundaries, ReadOnlySpan<int> offsets)
    {
        double acc = 0;
        for (int d = 0; d < q.Length; d++)
        {
            int o = offsets[d] + cells[d];
            double lo = boundaries[o], hi = boundaries[o + 1], v = q[d];
            double t = Math.Max(Math.Max(lo - v, v - hi), 0);
            acc += t * t;
        }
        return acc;
    }

    /// <summary>Σ_d ub_d².</summary>
    public static double UpperBound(ReadOnlySpan<float> q, ReadOnlySpan<byte> cells, ReadOnlySpan<float> boundaries, ReadOnlySpan<int> offsets)
    {
        double acc = 0;
        for (int d = 0; d < q.Length; d++)
        {
            int o = offsets[d] + cells[d];
            double lo = boundaries[o], hi = boundaries[o + 1], v = q[d];
            double t = Math.Max(Math.Abs(v - lo), Math.Abs(v - hi));
            acc += t * t;
        }
        return acc;
    }
}
