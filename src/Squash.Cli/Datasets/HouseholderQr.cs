using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Squash.Cli.Datasets;

/// <summary>
/// The QR factorisation of a square matrix by Householder reflections, bit for bit what MathNet.Numerics' managed provider
/// computes (<c>Matrix.QR()</c>: the same reflector vectors, the same operations on every element in the same order), but
/// several times faster (bench/builds-high-dims.md): the generators' random rotations come from it, and recorded
/// benchmark figures depend on those rotations staying exactly as they were.
/// </summary>
/// <remarks>
/// MathNet applies each reflector one column at a time: a sequential dot product (one accumulator, rows in order) and then
/// <c>a[i] -= v[i]·dot</c>. That order is kept within every column; the speed comes from working on four columns at once, one
/// per SIMD lane (columns are stored in panels of four, row-interleaved), and on several panels at once so the lanes'
/// additions overlap; from applying a block of reflectors to a group of columns while it is in cache (the unblocked
/// method streams the whole trailing matrix from memory for every reflector); and from splitting the columns over the
/// cores. Multiplications and additions stay separate (no fused multiply-add), so each lane rounds exactly as MathNet's
/// scalar loop does; lanes never mix.
/// </remarks>
public static class HouseholderQr
{
    private const int Lanes = 4;
    // Panels whose dot products run together: independent accumulators hide the latency of the additions.
    private const int PanelGroup = 4;
    // Reflectors applied together to a group of columns while it is in cache: the trailing columns are read once per
    // block instead of once per reflector (each column still takes the reflectors one by one, in MathNet's order).
    private const int Block = 32;
    // Below this many element updates a block runs on one thread: scheduling would cost more than it saves.
    private const long ParallelWork = 1 << 16;

    /// <summary>
    /// Factors the n × n matrix <paramref name="columnMajor"/> (column-major, as MathNet stores a dense matrix; left
    /// unchanged): Q (column-major, n × n) and the diagonal of R (whose signs make Q Haar-distributed when folded in).
    /// </summary>
    public static (double[] Q, double[] RDiagonal) Factor(double[] columnMajor, int n)
    {
        ArgumentNullException.ThrowIfNull(columnMajor);
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        if (columnMajor.Length != (long)n * n) throw new ArgumentException($"expected {n} x {n} values, got {columnMajor.Length}", nameof(columnMajor));

        int panels = (n + Lanes - 1) / Lanes;
        var r = new double[(long)panels * n * Lanes];
        for (int col = 0; col < n; col++)
            for (int row = 0; row < n; row++)
                r[At(n, row, col)] = columnMajor[(long)col * n + row];

        // Reflector k (rows k … n − 1) is kept at k·n for the second phase, as MathNet keeps its work array.
        var reflectors = new double[(long)n * n];
        var diagonal = new double[n];
        for (int c0 = 0; c0 < n; c0 += Block)
        {
            int c1 = Math.Min(n, c0 + Block);
            // The block's own columns, one reflector at a time (each made from its column once the ones before reached it) …
            for (int k = c0; k < c1; k++)
            {
                diagonal[k] = GenerateReflector(r, n, k, reflectors.AsSpan(k * n, n - k));
                if (k + 1 < c1) ApplyToPanels(r, n, reflectors, k, k + 1, ascending: true, columnOffset: 1, (k + 1) / Lanes, (c1 - 1) / Lanes + 1);
            }
            // … then all of them, in order, to each group of columns right of the block while the group is in cache.
            ApplyInParallel(r, n, reflectors, c0, c1, ascending: true, columnOffset: 1, (c1 + Lanes - 1) / Lanes, panels);
        }

        // Q = H₀ H₁ … H₍ₙ₋₁₎, applied to the identity from the last reflector back, reflector k to columns k … n − 1 as
        // MathNet does; a block of reflectors at a time, each column taking them in the same descending order.
        var q = new double[(long)panels * n * Lanes];
        for (int i = 0; i < n; i++) q[At(n, i, i)] = 1.0;
        for (int k0 = (n - 1) / Block * Block; k0 >= 0; k0 -= Block)
            ApplyInParallel(q, n, reflectors, k0, Math.Min(n, k0 + Block), ascending: false, columnOffset: 0, k0 / Lanes, panels);

        var result = new double[(long)n * n];
        for (int col = 0; col < n; col++)
            for (int row = 0; row < n; row++)
                result[(long)col * n + row] = q[At(n, row, col)];
        return (result, diagonal);
    }

    /// <summary>Where element (row, col) sits: column col's panel, then the row, then the column's lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long At(int n, int row, int col) => ((long)(col / Lanes) * n + row) * Lanes + col % Lanes;

    /// <summary>
    /// Takes column k below the diagonal into <paramref name="v"/> (zeroing it), turns it into the unit-scaled reflector
    /// (vᵀv = 2) and returns R's diagonal entry, with MathNet's operations and their order.
    /// </summary>
    private static double GenerateReflector(double[] a, int n, int k, Span<double> v)
    {
        for (int i = k; i < n; i++)
        {
            long at = At(n, i, k);
            v[i - k] = a[at];
            a[at] = 0.0;
        }

        double norm = 0.0;
        for (int i = 0; i < v.Length; i++) norm += v[i] * v[i];
        norm = Math.Sqrt(norm);
        long diagonalAt = At(n, k, k);
        if (k == n - 1 || norm == 0)
        {
            a[diagonalAt] = -v[0];
            v[0] = Math.Sqrt(2.0);
            return a[diagonalAt];
        }

        double scale = 1.0 / norm;
        if (v[0] < 0.0) scale *= -1.0;
        a[diagonalAt] = -1.0 / scale;
        for (int i = 0; i < v.Length; i++) v[i] *= scale;
        v[0] += 1.0;
        double s = Math.Sqrt(1.0 / v[0]);
        for (int i = 0; i < v.Length; i++) v[i] *= s;
        return a[diagonalAt];
    }

    /// <summary>
    /// Applies reflectors [<paramref name="k0"/>, <paramref name="k1"/>) to panels [<paramref name="p0"/>, <paramref name="p1"/>),
    /// the panels split in groups over the cores.
    /// </summary>
    private static void ApplyInParallel(double[] a, int n, double[] reflectors, int k0, int k1, bool ascending, int columnOffset, int p0, int p1)
    {
        int groups = (p1 - p0 + PanelGroup - 1) / PanelGroup;
        if (groups <= 0) return;
        void Group(int g)
        {
            int first = p0 + g * PanelGroup;
            ApplyToPanels(a, n, reflectors, k0, k1, ascending, columnOffset, first, Math.Min(p1, first + PanelGroup));
        }

        if (groups == 1 || (long)(n - k0) * (p1 - p0) * Lanes * (k1 - k0) < ParallelWork) for (int g = 0; g < groups; g++) Group(g);
        else Parallel.For(0, groups, Group);
    }

    /// <summary>
    /// Applies reflectors [<paramref name="k0"/>, <paramref name="k1"/>), in ascending or descending order, to the columns of
    /// panels [<paramref name="p0"/>, <paramref name="p1"/>) (at most <see cref="PanelGroup"/>): reflector k to rows k … n − 1
    /// of the columns from k + <paramref name="columnOffset"/> on, the columns left of that untouched.
    /// </summary>
    private static void ApplyToPanels(double[] a, int n, double[] reflectors, int k0, int k1, bool ascending, int columnOffset, int p0, int p1)
    {
        for (int step = 0; step < k1 - k0; step++)
        {
            int k = ascending ? k0 + step : k1 - 1 - step;
            int firstColumn = k + columnOffset;
            int first = Math.Max(p0, firstColumn / Lanes);
            if (first >= p1) continue;
            // Lanes of the panel that holds firstColumn left of it are columns this reflector must not touch.
            int skipped = first == firstColumn / Lanes ? firstColumn % Lanes : 0;
            var keep = Vector256.Create(skipped > 0 ? -1L : 0, skipped > 1 ? -1L : 0, skipped > 2 ? -1L : 0, 0L).AsDouble();
            UpdatePanels(a, n, reflectors, k, first, p1 - first, keep);
        }
    }

    /// <summary>
    /// For each column of panels p … p + count − 1: dot = Σ v[i − k]·a[i] over rows k … n − 1 in order, then
    /// a[i] −= v[i − k]·dot. Lanes set in <paramref name="keepFirst"/> (of the first panel) keep their values.
    /// </summary>
    private static void UpdatePanels(double[] a, int n, double[] reflectors, int k, int p, int count, Vector256<double> keepFirst)
    {
        int rows = n - k;
        ref double v = ref reflectors[k * n];
        ref double origin = ref MemoryMarshal.GetArrayDataReference(a);
        // Panel j's rows k … n − 1 start here; a row is Lanes doubles, a panel n rows.
        nuint Start(int j) => (nuint)(((long)(p + j) * n + k) * Lanes);
        int j0 = 0;
        for (; j0 + PanelGroup <= count; j0 += PanelGroup)
        {
            ref double a0 = ref Unsafe.Add(ref origin, Start(j0));
            ref double a1 = ref Unsafe.Add(ref origin, Start(j0 + 1));
            ref double a2 = ref Unsafe.Add(ref origin, Start(j0 + 2));
            ref double a3 = ref Unsafe.Add(ref origin, Start(j0 + 3));
            Vector256<double> d0 = Vector256<double>.Zero, d1 = d0, d2 = d0, d3 = d0;
            for (int i = 0; i < rows; i++)
            {
                var w = Vector256.Create(Unsafe.Add(ref v, i));
                nuint at = (nuint)i * Lanes;
                d0 += w * Vector256.LoadUnsafe(ref a0, at);
                d1 += w * Vector256.LoadUnsafe(ref a1, at);
                d2 += w * Vector256.LoadUnsafe(ref a2, at);
                d3 += w * Vector256.LoadUnsafe(ref a3, at);
            }

            var keep = j0 == 0 ? keepFirst : Vector256<double>.Zero;
            for (int i = 0; i < rows; i++)
            {
                var w = Vector256.Create(Unsafe.Add(ref v, i));
                nuint at = (nuint)i * Lanes;
                var old0 = Vector256.LoadUnsafe(ref a0, at);
                Vector256.ConditionalSelect(keep, old0, old0 - w * d0).StoreUnsafe(ref a0, at);
                (Vector256.LoadUnsafe(ref a1, at) - w * d1).StoreUnsafe(ref a1, at);
                (Vector256.LoadUnsafe(ref a2, at) - w * d2).StoreUnsafe(ref a2, at);
                (Vector256.LoadUnsafe(ref a3, at) - w * d3).StoreUnsafe(ref a3, at);
            }
        }

        for (int j = j0; j < count; j++)
        {
            ref double panel = ref Unsafe.Add(ref origin, Start(j));
            Vector256<double> dot = Vector256<double>.Zero;
            for (int i = 0; i < rows; i++) dot += Vector256.Create(Unsafe.Add(ref v, i)) * Vector256.LoadUnsafe(ref panel, (nuint)i * Lanes);
            var keep = j == 0 ? keepFirst : Vector256<double>.Zero;
            for (int i = 0; i < rows; i++)
            {
                nuint at = (nuint)i * Lanes;
                var old = Vector256.LoadUnsafe(ref panel, at);
                Vector256.ConditionalSelect(keep, old, old - Vector256.Create(Unsafe.Add(ref v, i)) * dot).StoreUnsafe(ref panel, at);
            }
        }
    }
}
