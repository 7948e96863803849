using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Squash.Core.Linalg;

/// <summary>
/// Eigendecomposition of a dense real symmetric matrix by the same method MathNet's managed provider uses (Householder
/// tridiagonalisation, then implicit QL with Wilkinson shifts on the tridiagonal), laid out for the cache and both cores:
/// <list type="bullet">
/// <item>the reduction keeps the upper triangle row-major, so the column being annihilated is a contiguous row, and makes
/// one parallel pass over the trailing rows per step that applies the pending rank-2 update and computes the next
/// matrix–vector product;</item>
/// <item>QL runs on the tridiagonal alone (O(n²)); its plane rotations are recorded and applied in batches to the
/// eigenvector matrix, stored transposed so that a rotation mixes two rows, in independent column strips that stay in
/// cache (parallel over strips);</item>
/// <item>the Householder reflectors are applied to the eigenvectors of the tridiagonal afterwards, rows in parallel.</item>
/// </list>
/// O(n³) like before, but about 20 s instead of about 7 minutes at n = 4096 on two cores (bench/builds-high-dims.md).
/// </summary>
internal static class HouseholderQl
{
    // Doubles per column strip of the rotation pass: 8 Vector256, i.e. eight independent rotation chains per row step.
    private const int Strip = 32;

    // Rotations recorded before they are applied to the eigenvectors (16 bytes each: 4 MB per batch).
    private const int RotationBatch = 1 << 18;

    // Below this trailing size the reduction runs on one thread (a parallel pass costs more than it saves).
    private const int ParallelRows = 256;

    /// <summary>
    /// Decomposes the symmetric row-major n×n <paramref name="a"/> (overwritten; only its upper triangle is read).
    /// Returns the eigenvalues (unsorted) and an n×n row-major matrix whose ROW r is the unit eigenvector of value r.
    /// <paramref name="progress"/> gets the fraction done (estimated from the work of each phase), at most about 100 times.
    /// </summary>
    public static (double[] Values, double[] VectorRows) Decompose(double[] a, int n, IProgress<double>? progress = null)
    {
        var report = new Reporter(progress);
        // Work on a power-of-two scaling with the largest entry in [0.5, 1): exact, and far from over- and underflow.
        double maxAbs = 0;
        foreach (double v in a) maxAbs = Math.Max(maxAbs, Math.Abs(v));
        int exponent = maxAbs > 0 ? Math.ILogB(maxAbs) + 1 : 0;
        if (exponent != 0)
            for (int i = 0; i < a.Length; i++) a[i] = Math.ScaleB(a[i], -exponent);

        var d = new double[n];
        var e = new double[n];
        var tau = new double[n];
        Tridiagonalize(a, n, d, e, tau, report);

        // The eigenvectors of T as rows, stored in strips of 32 columns (strip s holds rows 0..n−1 of columns
        // 32s..32s+31 contiguously), so that a rotation pass over one strip walks contiguous memory that stays in cache.
        int strips = (n + Strip - 1) / Strip;
        var z = new double[(long)strips * n * Strip];
        for (int i = 0; i < n; i++) z[(long)(i / Strip) * n * Strip + (long)i * Strip + i % Strip] = 1;
        TridiagonalQl(d, e, n, z, strips, report);

        var rows = new double[(long)n * n];
        Parallel.For(0, strips, s =>
        {
            int c0 = s * Strip, width = Math.Min(Strip, n - c0);
            var strip = z.AsSpan((int)((long)s * n * Strip), n * Strip);
            for (int i = 0; i < n; i++) strip.Slice(i * Strip, width).CopyTo(rows.AsSpan(i * n + c0, width));
        });
        BackTransform(a, n, tau, rows, report);

        var values = new double[n];
        for (int i = 0; i < n; i++) values[i] = Math.ScaleB(d[i], exponent);
        report.Report(1);
        return (values, rows);
    }

    // Shares of the running time: reduction, QL with the rotations, back-transformation (measured at n = 2048).
    private const double ReductionShare = 0.4, QlShare = 0.35;

    /// <summary>Passes on a fraction when it has grown by a percent (thread-safe: the back-transformation reports from workers).</summary>
    private sealed class Reporter(IProgress<double>? progress)
    {
        private double _last = -1;

        public void Report(double fraction)
        {
            if (progress is null) return;
            lock (this)
            {
                if (fraction < _last + 0.01 && fraction < 1) return;
                _last = fraction;
            }
            progress.Report(Math.Min(1, fraction));
        }
    }

    /// <summary>
    /// Householder reduction Qᵀ A Q = T (diagonal d, superdiagonal e[0..n−2]), Q = H_0 ⋯ H_{n−3}. Reflector j acts on
    /// indices j+1..n−1; its vector (leading 1 included) is left in row j of <paramref name="a"/> at columns j+1..n−1.
    /// </summary>
    private static void Tridiagonalize(double[] a, int n, double[] d, double[] e, double[] tau, Reporter report)
    {
        // Pending update from the previous step: A22 −= v wᵀ + w vᵀ on indices ≥ j.
        var v = new double[n];
        var w = new double[n];
        var vNext = new double[n];
        var p = new double[n];
        bool pending = false;
        // A fixed number of partial sums, not one per core: the sums' order, and so every bit of the result, is the same
        // on any machine (a build's codes must not depend on where it ran); the parallel loop spreads them over the cores.
        const int workers = 8;
        var partial = new double[workers][];
        for (int t = 0; t < workers; t++) partial[t] = new double[n];

        for (int j = 0; j < n; j++)
        {
            double left = (n - j) / (double)n;
            report.Report(ReductionShare * (1 - left * left * left));
            var rowJ = a.AsSpan(j * n + j, n - j);
            if (pending) UpdateRow(rowJ, v[j], w[j], v.AsSpan(j), w.AsSpan(j));
            d[j] = rowJ[0];
            if (j == n - 1) break;

            // Reflector from the part of column j below the diagonal (= row j right of it).
            var x = rowJ[1..];
            bool reflect = j < n - 2;
            double t0 = 0;
            if (reflect)
            {
                double alpha = x[0];
                double xnorm = Norm(x[1..]);
                if (xnorm == 0)
                {
                    e[j] = alpha;
                    x[0] = 1;
                    reflect = false;
                }
                else
                {
                    double beta = -Math.CopySign(Hypot(alpha, xnorm), alpha);
                    t0 = (beta - alpha) / beta;
                    TensorPrimitives.Multiply(x[1..], 1.0 / (alpha - beta), x[1..]);
                    x[0] = 1;
                    e[j] = beta;
                }
            }
            else
                e[j] = x[0];
            tau[j] = reflect ? t0 : 0;

            Array.Clear(vNext);
            if (reflect) x.CopyTo(vNext.AsSpan(j + 1));

            // One pass over rows j+1..n−1: apply the pending update, then accumulate p = A22 vNext from the upper triangle.
            int first = j + 1, count = n - first;
            int used = count >= ParallelRows ? workers : 1;
            for (int t = 0; t < used; t++) partial[t].AsSpan(first).Clear();
            bool apply = pending, product = reflect;
            if (used == 1)
                RowsPass(a, n, first, 0, 1, apply, product, v, w, vNext, partial[0]);
            else
                Parallel.For(0, used, t => RowsPass(a, n, first, t, used, apply, product, v, w, vNext, partial[t]));

            if (!reflect)
            {
                pending = false;
                continue;
            }
            var pj = p.AsSpan(first);
            partial[0].AsSpan(first).CopyTo(pj);
            for (int t = 1; t < used; t++) TensorPrimitives.Add(pj, partial[t].AsSpan(first), pj);
            TensorPrimitives.Multiply(pj, t0, pj);
            var vj = vNext.AsSpan(first);
            double k = -0.5 * t0 * TensorPrimitives.Dot(pj, vj);
            (v, vNext) = (vNext, v);
            Array.Clear(w);
            TensorPrimitives.MultiplyAdd(vj, k, pj, w.AsSpan(first)); // w = p + k v
            // v now holds this step's vector; vNext's old contents are cleared at the next step.
            pending = true;
        }
    }

    private static void RowsPass(double[] a, int n, int first, int offset, int step, bool apply, bool product,
        double[] v, double[] w, double[] vNext, double[] acc)
    {
        for (int i = first + offset; i < n; i += step)
        {
            var row = a.AsSpan(i * n + i, n - i);
            if (apply && product)
            {
                acc[i] += UpdateRowAndMultiply(row, v[i], w[i], v.AsSpan(i), w.AsSpan(i), vNext.AsSpan(i), acc.AsSpan(i));
                continue;
            }
            if (apply) UpdateRow(row, v[i], w[i], v.AsSpan(i), w.AsSpan(i));
            if (!product) continue;
            var vn = vNext.AsSpan(i);
            acc[i] += TensorPrimitives.Dot(row, vn);
            double vi = vNext[i];
            if (vi != 0 && row.Length > 1)
            {
                var tail = acc.AsSpan(i + 1);
                TensorPrimitives.MultiplyAdd(row[1..], vi, tail, tail);
            }
        }
    }

    // row −= v_i w + w_i v over the row's upper part (indices i..n−1).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void UpdateRow(Span<double> row, double vi, double wi, ReadOnlySpan<double> v, ReadOnlySpan<double> w)
    {
        TensorPrimitives.MultiplyAdd(w, -vi, row, row);
        TensorPrimitives.MultiplyAdd(v, -wi, row, row);
    }

    /// <summary>
    /// One read and one write of the row (indices i..n−1): row −= v_i w + w_i v, then returns row·u and adds u_i·row
    /// (right of the diagonal) to <paramref name="acc"/>, i.e. this row's share of the next step's p = A u.
    /// </summary>
    private static double UpdateRowAndMultiply(Span<double> row, double vi, double wi, ReadOnlySpan<double> v,
        ReadOnlySpan<double> w, ReadOnlySpan<double> u, Span<double> acc)
    {
        int len = row.Length;
        double r0 = row[0] - vi * w[0] - wi * v[0];
        row[0] = r0;
        double dot = r0 * u[0];
        double ui = u[0];
        ref double pr = ref MemoryMarshal.GetReference(row);
        ref double pv = ref MemoryMarshal.GetReference(v);
        ref double pw = ref MemoryMarshal.GetReference(w);
        ref double pu = ref MemoryMarshal.GetReference(u);
        ref double pa = ref MemoryMarshal.GetReference(acc);
        var cvi = Vector256.Create(vi);
        var cwi = Vector256.Create(wi);
        var cui = Vector256.Create(ui);
        var d0 = Vector256<double>.Zero;
        var d1 = Vector256<double>.Zero;
        int k = 1;
        for (; k + 8 <= len; k += 8)
        {
            var r = Vector256.LoadUnsafe(ref pr, (nuint)k) - cvi * Vector256.LoadUnsafe(ref pw, (nuint)k) - cwi * Vector256.LoadUnsafe(ref pv, (nuint)k);
            var q = Vector256.LoadUnsafe(ref pr, (nuint)k + 4) - cvi * Vector256.LoadUnsafe(ref pw, (nuint)k + 4) - cwi * Vector256.LoadUnsafe(ref pv, (nuint)k + 4);
            r.StoreUnsafe(ref pr, (nuint)k);
            q.StoreUnsafe(ref pr, (nuint)k + 4);
            d0 += r * Vector256.LoadUnsafe(ref pu, (nuint)k);
            d1 += q * Vector256.LoadUnsafe(ref pu, (nuint)k + 4);
            (Vector256.LoadUnsafe(ref pa, (nuint)k) + cui * r).StoreUnsafe(ref pa, (nuint)k);
            (Vector256.LoadUnsafe(ref pa, (nuint)k + 4) + cui * q).StoreUnsafe(ref pa, (nuint)k + 4);
        }
        dot += Vector256.Sum(d0 + d1);
        for (; k < len; k++)
        {
            double r = row[k] - vi * w[k] - wi * v[k];
            row[k] = r;
            dot += r * u[k];
            acc[k] += ui * r;
        }
        return dot;
    }

    private static double Norm(ReadOnlySpan<double> x)
    {
        if (x.IsEmpty) return 0;
        double scale = TensorPrimitives.MaxMagnitude(x);
        if (scale == 0) return 0;
        if (scale is > 1e-150 and < 1e150) return Math.Sqrt(TensorPrimitives.Dot(x, x));
        double s = 0;
        foreach (double t in x) s += (t / scale) * (t / scale);
        return scale * Math.Sqrt(s);
    }

    private static double Hypot(double a, double b)
    {
        a = Math.Abs(a);
        b = Math.Abs(b);
        double big = Math.Max(a, b), small = Math.Min(a, b);
        if (big == 0) return 0;
        double r = small / big;
        return big * Math.Sqrt(1 + r * r);
    }

    /// <summary>
    /// Implicit QL with Wilkinson shifts (EISPACK tql2, as in MathNet) on d (diagonal) and e (e[i] = T[i, i+1]); the
    /// rotations are applied to the rows of <paramref name="z"/> (n rows in 16-column strips), in batches.
    /// </summary>
    private static void TridiagonalQl(double[] d, double[] e, int n, double[] z, int strips, Reporter report)
    {
        var batch = new RotationList(strips);
        double f = 0, tst1 = 0;
        double eps = Math.ScaleB(1.0, -53);
        e[n - 1] = 0;
        for (int l = 0; l < n; l++)
        {
            double left = (n - l) / (double)n;
            report.Report(ReductionShare + QlShare * (1 - left * left));
            tst1 = Math.Max(tst1, Math.Abs(d[l]) + Math.Abs(e[l]));
            int m = l;
            while (m < n && Math.Abs(e[m]) > eps * tst1) m++;
            if (m == n) m = n - 1; // e[n−1] = 0 always stops it; kept for safety
            if (m > l)
            {
                int iterations = 0;
                do
                {
                    if (++iterations > 60)
                        throw new InvalidOperationException($"QL did not converge on eigenvalue {l} of {n}.");
                    double g = d[l];
                    double p = (d[l + 1] - g) / (2.0 * e[l]);
                    double r = Hypot(p, 1.0);
                    if (p < 0) r = -r;
                    d[l] = e[l] / (p + r);
                    d[l + 1] = e[l] * (p + r);
                    double dl1 = d[l + 1];
                    double h = g - d[l];
                    for (int i = l + 2; i < n; i++) d[i] -= h;
                    f += h;

                    p = d[m];
                    double c = 1.0, c2 = c, c3 = c;
                    double el1 = e[l + 1];
                    double s = 0.0, s2 = 0.0;
                    var rotations = batch.Begin(l, m);
                    for (int i = m - 1; i >= l; i--)
                    {
                        c3 = c2;
                        c2 = c;
                        s2 = s;
                        g = c * e[i];
                        h = c * p;
                        r = Hypot(p, e[i]);
                        e[i + 1] = s * r;
                        s = e[i] / r;
                        c = p / r;
                        p = c * d[i] - s * g;
                        d[i + 1] = h + s * (c * g + s * d[i]);
                        int at = 2 * (m - 1 - i);
                        rotations[at] = c;
                        rotations[at + 1] = s;
                    }
                    if (batch.Count >= RotationBatch) batch.ApplyTo(z, n);

                    p = -s * s2 * c3 * el1 * e[l] / dl1;
                    e[l] = s * p;
                    d[l] = c * p;
                }
                while (Math.Abs(e[l]) > eps * tst1);
            }
            d[l] += f;
            e[l] = 0.0;
        }
        batch.ApplyTo(z, n);
    }

    /// <summary>QL sweeps recorded in order: sweep k rotates rows (i, i+1) for i = M−1 down to L with (c, s).</summary>
    private sealed class RotationList(int strips)
    {
        private readonly List<(int L, int M, int Offset)> _sweeps = [];
        private double[] _cs = new double[2 * 4096];
        private int _used;

        public int Count => _used / 2;

        public Span<double> Begin(int l, int m)
        {
            int need = 2 * (m - l);
            if (_used + need > _cs.Length) Array.Resize(ref _cs, Math.Max(2 * _cs.Length, _used + need));
            _sweeps.Add((l, m, _used));
            var span = _cs.AsSpan(_used, need);
            _used += need;
            return span;
        }

        public void ApplyTo(double[] z, int n)
        {
            if (_sweeps.Count == 0) return;
            var sweeps = CollectionsMarshal.AsSpan(_sweeps).ToArray();
            var cs = _cs;
            long stripSize = (long)n * Strip;
            if (strips == 1 || (long)Count * strips < 1 << 12)
                for (int s = 0; s < strips; s++) ApplyStrip(z, s * stripSize, sweeps, cs);
            else
                Parallel.For(0, strips, s => ApplyStrip(z, s * stripSize, sweeps, cs));
            _sweeps.Clear();
            _used = 0;
        }

        // Every recorded sweep on the strip at z[start..]: the row below is carried in registers down the chain.
        private static void ApplyStrip(double[] z, long start, (int L, int M, int Offset)[] sweeps, double[] cs)
        {
            ref double z0 = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(z), (nint)start);
            foreach (var (l, m, offset) in sweeps)
            {
                ref double below = ref Unsafe.Add(ref z0, (nint)m * Strip);
                var h0 = Vector256.LoadUnsafe(ref below, 0);
                var h1 = Vector256.LoadUnsafe(ref below, 4);
                var h2 = Vector256.LoadUnsafe(ref below, 8);
                var h3 = Vector256.LoadUnsafe(ref below, 12);
                var h4 = Vector256.LoadUnsafe(ref below, 16);
                var h5 = Vector256.LoadUnsafe(ref below, 20);
                var h6 = Vector256.LoadUnsafe(ref below, 24);
                var h7 = Vector256.LoadUnsafe(ref below, 28);
                int at = offset;
                for (int i = m - 1; i >= l; i--, at += 2)
                {
                    var c = Vector256.Create(cs[at]);
                    var s = Vector256.Create(cs[at + 1]);
                    ref double row = ref Unsafe.Add(ref z0, (nint)i * Strip);
                    var x0 = Vector256.LoadUnsafe(ref row, 0);
                    var x1 = Vector256.LoadUnsafe(ref row, 4);
                    var x2 = Vector256.LoadUnsafe(ref row, 8);
                    var x3 = Vector256.LoadUnsafe(ref row, 12);
                    var x4 = Vector256.LoadUnsafe(ref row, 16);
                    var x5 = Vector256.LoadUnsafe(ref row, 20);
                    var x6 = Vector256.LoadUnsafe(ref row, 24);
                    var x7 = Vector256.LoadUnsafe(ref row, 28);
                    // z[i+1] = s·z[i] + c·z[i+1];  z[i] = c·z[i] − s·z[i+1]  (old values on the right)
                    (s * x0 + c * h0).StoreUnsafe(ref below, 0);
                    (s * x1 + c * h1).StoreUnsafe(ref below, 4);
                    (s * x2 + c * h2).StoreUnsafe(ref below, 8);
                    (s * x3 + c * h3).StoreUnsafe(ref below, 12);
                    (s * x4 + c * h4).StoreUnsafe(ref below, 16);
                    (s * x5 + c * h5).StoreUnsafe(ref below, 20);
                    (s * x6 + c * h6).StoreUnsafe(ref below, 24);
                    (s * x7 + c * h7).StoreUnsafe(ref below, 28);
                    h0 = c * x0 - s * h0;
                    h1 = c * x1 - s * h1;
                    h2 = c * x2 - s * h2;
                    h3 = c * x3 - s * h3;
                    h4 = c * x4 - s * h4;
                    h5 = c * x5 - s * h5;
                    h6 = c * x6 - s * h6;
                    h7 = c * x7 - s * h7;
                    below = ref row;
                }
                h0.StoreUnsafe(ref below, 0);
                h1.StoreUnsafe(ref below, 4);
                h2.StoreUnsafe(ref below, 8);
                h3.StoreUnsafe(ref below, 12);
                h4.StoreUnsafe(ref below, 16);
                h5.StoreUnsafe(ref below, 20);
                h6.StoreUnsafe(ref below, 24);
                h7.StoreUnsafe(ref below, 28);
            }
        }
    }

    /// <summary>Row r of z ← z_rᵀ H_{n−3} ⋯ H_0, i.e. the eigenvectors of T mapped back by Q; blocks of rows in parallel.</summary>
    private static void BackTransform(double[] a, int n, double[] tau, double[] z, Reporter report)
    {
        const int block = 32;
        int blocks = (n + block - 1) / block;
        int done = 0;
        void Run(int b)
        {
            report.Report(ReductionShare + QlShare + (1 - ReductionShare - QlShare) * Interlocked.Increment(ref done) / blocks);
            int r0 = b * block, r1 = Math.Min(n, r0 + block);
            for (int j = n - 3; j >= 0; j--)
            {
                double t = tau[j];
                if (t == 0) continue;
                var vj = new ReadOnlySpan<double>(a, j * n + j + 1, n - j - 1);
                for (int r = r0; r < r1; r++)
                {
                    var row = z.AsSpan(r * n + j + 1, n - j - 1);
                    double sc = t * TensorPrimitives.Dot(row, vj);
                    if (sc != 0) TensorPrimitives.MultiplyAdd(vj, -sc, row, row);
                }
            }
        }
        if (blocks == 1 || n < 128)
            for (int b = 0; b < blocks; b++) Run(b);
        else
            Parallel.For(0, blocks, Run);
    }
}
