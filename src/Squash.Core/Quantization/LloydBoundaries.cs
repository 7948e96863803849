using System.Buffers;

namespace Squash.Core.Quantization;

/// <summary>
/// Non-uniform scalar quantiser for one dimension: c = 2^bits cells [b_j, b_{j+1}) fitted by 1-D Lloyd.
/// <para>
/// Cells are contiguous ranges of the sorted training values, so with prefix sums S1, S2 of (v − shift) a
/// cell's count n, mean r = shift + ΣS1/n and distortion Σ(v − r)² = ΣS2 − (ΣS1)²/n cost O(1) after two binary
/// searches: one Lloyd iteration is O(c log n) instead of O(c n). Each iteration sets r_j = cell mean (the
/// best representative for a partition) and b_j = (r_{j−1} + r_j)/2 (the best partition for representatives),
/// so total distortion never increases in exact arithmetic; we also keep the best boundaries seen, so float
/// rounding cannot make the result worse than the initialisation.
/// </para>
/// </summary>
public static class LloydBoundaries
{
    /// <summary>Codes are one byte, so at most 2^8 cells.</summary>
    public const int MaxBits = 8;

    /// <summary>
    /// Fits boundaries b_0 &lt; … &lt; b_c (length c + 1, c = 2^<paramref name="bits"/>) to ascending, finite
    /// <paramref name="sortedValues"/>. Every training value v satisfies b_0 ≤ v &lt; b_c. With
    /// <paramref name="pinZero"/> b_{c/2} is exactly 0 and each sign is fitted with c/2 cells on its own, so the
    /// top bit of a code is the sign bit (set iff v ≥ 0). Boundaries are always non-decreasing, and strictly
    /// increasing unless a range holds so few distinct floats that cells must collapse.
    /// </summary>
    /// <param name="tolerance">Stop when the relative change of total distortion falls below this.</param>
    /// <param name="maxIterations">Lloyd iterations after the quantile initialisation (0 returns the initialisation).</param>
    public static float[] Fit(ReadOnlySpan<float> sortedValues, int bits, bool pinZero, double tolerance = 0.005, int maxIterations = 250)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bits);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bits, MaxBits);
        if (pinZero && bits == 0)
        {
            throw new ArgumentException("Pinning zero needs at least one bit (the sign).", nameof(pinZero));
        }

        if (!(tolerance >= 0))
        {
            throw new ArgumentOutOfRangeException(nameof(tolerance), tolerance, "Tolerance must be ≥ 0.");
        }

        ArgumentOutOfRangeException.ThrowIfNegative(maxIterations);
        if (sortedValues.IsEmpty)
        {
            throw new ArgumentException("At least one training value is needed.", nameof(sortedValues));
        }

        int n = sortedValues.Length;
        // Rented: fitting runs once per dimension over large n, and fresh LOH arrays would dominate its cost.
        double[] s1 = ArrayPool<double>.Shared.Rent(n + 1);
        double[] s2 = ArrayPool<double>.Shared.Rent(n + 1);
        int[] cuts = ArrayPool<int>.Shared.Rent(n);
        try
        {
            return FitSorted(sortedValues, bits, pinZero, tolerance, maxIterations, s1, s2, cuts);
        }
        finally
        {
            ArrayPool<int>.Shared.Return(cuts);
            ArrayPool<double>.Shared.Return(s2);
            ArrayPool<double>.Shared.Return(s1);
        }
    }

    private static float[] FitSorted(ReadOnlySpan<float> sortedValues, int bits, bool pinZero, double tolerance, int maxIterations, double[] s1, double[] s2, int[] cuts)
    {
        int n = sortedValues.Length;
        // Shift by the median so the prefix sums of squares do not cancel catastrophically for offset data.
        double shift = sortedValues[n / 2];
        s1[0] = 0;
        s2[0] = 0;
        float previous = float.NegativeInfinity;
        for (int i = 0; i < n; i++)
        {
            float v = sortedValues[i];
            if (!float.IsFinite(v))
            {
                throw new ArgumentException("Training values must be finite.", nameof(sortedValues));
            }

            if (v < previous)
            {
                throw new ArgumentException("Training values must be sorted ascending.", nameof(sortedValues));
            }

            previous = v;
            double x = v - shift;
            s1[i + 1] = s1[i] + x;
            s2[i + 1] = s2[i] + (x * x);
        }

        int cells = 1 << bits;
        var boundaries = new float[cells + 1];
        (boundaries[0], boundaries[cells]) = OuterBoundaries(sortedValues[0], sortedValues[n - 1], pinZero);
        var data = new CellData(sortedValues, s1, s2, shift);
        if (!pinZero)
        {
            FitRange(data, 0, n, boundaries, cuts, tolerance, maxIterations);
        }
        else
        {
            int half = cells / 2;
            int firstNonNegative = LowerBound(sortedValues, 0, n, 0f);
            boundaries[half] = 0f;
            FitRange(data, 0, firstNonNegative, boundaries.AsSpan(0, half + 1), cuts, tolerance, maxIterations);
            FitRange(data, firstNonNegative, n, boundaries.AsSpan(half, half + 1), cuts, tolerance, maxIterations);
        }

        return boundaries;
    }

    /// <summary>
    /// The cell j with b_j ≤ <paramref name="value"/> &lt; b_{j+1}, clamped to [0, c − 1] (so values outside
    /// [b_0, b_c), and NaN, land in an outer cell). With tied boundaries the last matching cell wins, which is
    /// the one whose half-open range actually contains the value.
    /// </summary>
    public static int Encode(ReadOnlySpan<float> boundaries, float value)
    {
        if (boundaries.Length < 2)
        {
            throw new ArgumentException("Need at least two boundaries (one cell).", nameof(boundaries));
        }

        // Count the inner boundaries b_1..b_{c−1} that are ≤ value; they form a prefix because b is sorted.
        int lo = 1;
        int len = boundaries.Length - 2;
        while (len > 0)
        {
            int half = len >> 1;
            if (boundaries[lo + half] <= value)
            {
                lo += half + 1;
                len -= half + 1;
            }
            else
            {
                len = half;
            }
        }

        return lo - 1;
    }

    /// <summary>Sorted training values with prefix sums of (v − shift) and (v − shift)².</summary>
    private readonly ref struct CellData
    {
        public CellData(ReadOnlySpan<float> values, double[] s1, double[] s2, double shift)
        {
            Values = values;
            S1 = s1;
            S2 = s2;
            Shift = shift;
        }

        public ReadOnlySpan<float> Values { get; }

        public double[] S1 { get; }

        public double[] S2 { get; }

        public double Shift { get; }
    }

    /// <summary>
    /// b_0 = min − δ and b_c = max + δ with δ = range/1024 (or |value|/1024, or 1/1024 for constant data), nudged
    /// by one ulp if rounding would swallow δ. With pinZero an empty side mirrors the other so b_0 &lt; 0 &lt; b_c.
    /// </summary>
    private static (float Low, float High) OuterBoundaries(float min, float max, bool pinZero)
    {
        double lowest = pinZero ? Math.Min(min, 0.0) : min;
        double highest = pinZero ? Math.Max(max, 0.0) : max;
        double delta = (highest - lowest) / 1024;
        if (!(delta > 0))
        {
            delta = Math.Max(Math.Abs(lowest), Math.Abs(highest)) / 1024;
        }

        if (!(delta > 0))
        {
            delta = 1.0 / 1024;
        }

        float low = (float)(min - delta);
        if (!(low < min))
        {
            low = float.BitDecrement(min);
        }

        float high = (float)(max + delta);
        if (!(high > max))
        {
            high = float.BitIncrement(max);
        }

        if (pinZero)
        {
            if (min >= 0)
            {
                low = -high;
            }
            else if (max < 0)
            {
                high = -low;
            }
        }

        return (low, high);
    }

    /// <summary>
    /// Fits the inner boundaries of <paramref name="b"/> (b[0] and b[^1] already set, enclosing every value of
    /// Values[start..end)) to those values.
    /// </summary>
    private static void FitRange(in CellData data, int start, int end, Span<float> b, int[] cuts, double tolerance, int maxIterations)
    {
        int cells = b.Length - 1;
        if (cells == 1)
        {
            return;
        }

        // Cut positions: indices k where Values[k−1] < Values[k], the only places a boundary can separate values.
        ReadOnlySpan<float> values = data.Values;
        int cutCount = 0;
        for (int k = start + 1; k < end; k++)
        {
            if (values[k - 1] < values[k])
            {
                cuts[cutCount++] = k;
            }
        }

        int distinct = end > start ? cutCount + 1 : 0;
        if (distinct <= cells)
        {
            // Every distinct value can have its own cell: zero distortion, nothing for Lloyd to improve.
            FitFewDistinct(values, cuts.AsSpan(0, cutCount), b);
            return;
        }

        QuantileInit(values, start, end, cuts.AsSpan(0, cutCount), b);
        Lloyd(data, start, end, b, tolerance, maxIterations);
    }

    /// <summary>A boundary at cut k: the midpoint of Values[k−1] &lt; Values[k], rounded so it stays above the lower one.</summary>
    private static float CutBoundary(ReadOnlySpan<float> values, int k)
    {
        float below = values[k - 1];
        float above = values[k];
        float mid = (float)(((double)below + above) * 0.5);
        return mid > below ? mid : above;
    }

    /// <summary>
    /// Equal-frequency initialisation restricted to cut positions: boundary j goes to the cut nearest the
    /// j/c quantile, but always after the previous one and leaving enough cuts for the rest. Distinct cuts
    /// make the boundaries strictly increasing and every cell non-empty.
    /// </summary>
    private static void QuantileInit(ReadOnlySpan<float> values, int start, int end, ReadOnlySpan<int> cuts, Span<float> b)
    {
        int cells = b.Length - 1;
        int count = end - start;
        int previous = -1;
        for (int j = 1; j < cells; j++)
        {
            double target = start + ((double)j * count / cells);
            int q = cuts.BinarySearch((int)Math.Ceiling(target));
            q = q >= 0 ? q : ~q;
            if (q == cuts.Length || (q > 0 && target - cuts[q - 1] <= cuts[q] - target))
            {
                q--;
            }

            q = Math.Clamp(q, previous + 1, cuts.Length - (cells - j));
            b[j] = CutBoundary(values, cuts[q]);
            previous = q;
        }
    }

    /// <summary>
    /// At most as many distinct values as cells: one boundary at each cut, then the spare cells go to the widest
    /// intervals (each split evenly), which for a side with no values spreads its cells evenly. b[^1] stays as set.
    /// </summary>
    private static void FitFewDistinct(ReadOnlySpan<float> values, ReadOnlySpan<int> cuts, Span<float> b)
    {
        int cells = b.Length - 1;
        int intervals = cuts.Length + 1;
        Span<double> edges = stackalloc double[intervals + 1];
        Span<int> pieces = stackalloc int[intervals];
        edges[0] = b[0];
        edges[intervals] = b[cells];
        for (int i = 0; i < cuts.Length; i++)
        {
            edges[i + 1] = CutBoundary(values, cuts[i]);
        }

        pieces.Fill(1);
        int spare = cells - intervals;
        if (spare > 0)
        {
            // Largest piece width first, lowest interval on ties.
            var heap = new PriorityQueue<int, (double NegWidth, int Index)>(intervals);
            for (int i = 0; i < intervals; i++)
            {
                heap.Enqueue(i, (-(edges[i + 1] - edges[i]), i));
            }

            for (; spare > 0; spare--)
            {
                int i = heap.Dequeue();
                pieces[i]++;
                heap.Enqueue(i, (-(edges[i + 1] - edges[i]) / pieces[i], i));
            }
        }

        int j = 0;
        for (int i = 0; i < intervals; i++)
        {
            double width = edges[i + 1] - edges[i];
            for (int p = 0; p < pieces[i]; p++)
            {
                b[j++] = (float)(edges[i] + (width * p / pieces[i]));
            }
        }
    }

    /// <summary>Runs Lloyd from the boundaries in <paramref name="b"/> and leaves the best ones found there.</summary>
    private static void Lloyd(in CellData data, int start, int end, Span<float> b, double tolerance, int maxIterations)
    {
        int cells = b.Length - 1;
        Span<double> reps = stackalloc double[cells];
        Span<float> best = stackalloc float[cells + 1];
        Span<float> next = stackalloc float[cells + 1];
        double bestDistortion = Evaluate(data, start, end, b, reps);
        double previousDistortion = bestDistortion;
        b.CopyTo(best);
        next[0] = b[0];
        next[cells] = b[cells];

        for (int iteration = 0; iteration < maxIterations && previousDistortion > 0; iteration++)
        {
            // Midpoints of increasing representatives increase too; if float rounding merges two boundaries
            // (values within an ulp or so) stop rather than lose a cell.
            bool increasing = true;
            for (int j = 1; j < cells && increasing; j++)
            {
                next[j] = (float)((reps[j - 1] + reps[j]) * 0.5);
                increasing = next[j] > next[j - 1];
            }

            if (!increasing || !(next[cells] > next[cells - 1]))
            {
                break;
            }

            next.CopyTo(b);
            double distortion = Evaluate(data, start, end, b, reps);
            if (distortion < bestDistortion)
            {
                bestDistortion = distortion;
                b.CopyTo(best);
            }

            bool converged = Math.Abs(previousDistortion - distortion) < tolerance * previousDistortion;
            previousDistortion = distortion;
            if (converged)
            {
                break;
            }
        }

        best.CopyTo(b);
    }

    /// <summary>
    /// Total distortion of the partition given by <paramref name="b"/>, and each cell's representative: its mean,
    /// or the midpoint of its boundaries when empty (deterministic, keeps representatives increasing).
    /// </summary>
    private static double Evaluate(in CellData data, int start, int end, ReadOnlySpan<float> b, Span<double> reps)
    {
        int cells = b.Length - 1;
        double total = 0;
        int first = start;
        for (int j = 0; j < cells; j++)
        {
            int last = j == cells - 1 ? end : LowerBound(data.Values, first, end, b[j + 1]);
            int count = last - first;
            if (count > 0)
            {
                double sum = data.S1[last] - data.S1[first];
                double sumSquares = data.S2[last] - data.S2[first];
                double mean = sum / count;
                total += Math.Max(0.0, sumSquares - (sum * mean));
                reps[j] = data.Shift + mean;
            }
            else
            {
                reps[j] = ((double)b[j] + b[j + 1]) * 0.5;
            }

            first = last;
        }

        return total;
    }

    /// <summary>First index in [lo, hi) whose value is ≥ <paramref name="bound"/> (hi if none): the cell split rule of Encode.</summary>
    private static int LowerBound(ReadOnlySpan<float> values, int lo, int hi, float bound)
    {
        while (lo < hi)
        {
            int mid = lo + ((hi - lo) >> 1);
            if (values[mid] < bound)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }

        return lo;
    }
}
