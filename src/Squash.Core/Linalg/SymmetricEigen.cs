namespace Squash.Core.Linalg;

/// <summary>
/// Eigendecomposition of a real symmetric matrix: Householder tridiagonalisation + implicit QL, MathNet's managed
/// method, in a cache-friendly, parallel form (<see cref="HouseholderQl"/>) that decomposes 4096×4096 in seconds.
/// </summary>
public static class SymmetricEigen
{
    /// <summary>
    /// Decomposes the row-major n×n symmetric <paramref name="matrix"/>.
    /// Values are sorted descending; Vectors is row-major n×n and its COLUMN j is the unit eigenvector of Values[j],
    /// with the sign chosen so that its component of largest magnitude (first such index on ties) is positive.
    /// <paramref name="progress"/> gets the fraction done, at most about 100 times (a 4096×4096 matrix takes seconds).
    /// </summary>
    /// <exception cref="ArgumentException">n &lt; 1, wrong length, non-finite entries, or not symmetric.</exception>
    public static (double[] Values, double[] Vectors) Decompose(ReadOnlySpan<double> matrix, int n, IProgress<double>? progress = null)
    {
        if (n < 1)
            throw new ArgumentException($"n must be at least 1 (got {n}).", nameof(n));
        if ((long)n * n != matrix.Length)
            throw new ArgumentException($"matrix must have n² = {(long)n * n} entries (got {matrix.Length}).", nameof(matrix));

        double maxAbs = 0;
        foreach (double v in matrix)
        {
            if (!double.IsFinite(v))
                throw new ArgumentException("matrix contains a non-finite entry.", nameof(matrix));
            maxAbs = Math.Max(maxAbs, Math.Abs(v));
        }

        // Relative tolerance: covariance matrices built in a different summation order differ in the last bits.
        double tol = 1e-9 * Math.Max(maxAbs, double.Epsilon);
        var sym = new double[n * n];
        for (int i = 0; i < n; i++)
        {
            sym[i * n + i] = matrix[i * n + i];
            for (int j = i + 1; j < n; j++)
            {
                double a = matrix[i * n + j], b = matrix[j * n + i];
                if (Math.Abs(a - b) > tol)
                    throw new ArgumentException($"matrix is not symmetric at ({i},{j}): {a} vs {b}.", nameof(matrix));
                double m = 0.5 * (a + b);
                sym[i * n + j] = m;
                sym[j * n + i] = m;
            }
        }

        var (rawValues, rawVectors) = HouseholderQl.Decompose(sym, n, progress); // eigenvector j contiguous at [j*n, j*n+n)

        // Sort descending explicitly (stable on index).
        var order = new int[n];
        var keys = new double[n];
        for (int j = 0; j < n; j++)
        {
            order[j] = j;
            keys[j] = rawValues[j];
        }
        Array.Sort(order, (x, y) =>
        {
            int c = keys[y].CompareTo(keys[x]);
            return c != 0 ? c : x.CompareTo(y);
        });

        var values = new double[n];
        var vectors = new double[n * n];
        for (int j = 0; j < n; j++)
        {
            int src = order[j];
            values[j] = keys[src];
            var col = rawVectors.AsSpan(src * n, n);

            // Re-normalise (cheap) and fix the sign so results are reproducible across providers.
            double norm2 = 0;
            int arg = 0;
            double best = -1;
            for (int i = 0; i < n; i++)
            {
                double a = Math.Abs(col[i]);
                norm2 += col[i] * col[i];
                if (a > best)
                {
                    best = a;
                    arg = i;
                }
            }
            double scale = 1.0 / Math.Sqrt(norm2);
            if (col[arg] < 0)
                scale = -scale;
            for (int i = 0; i < n; i++)
                vectors[i * n + j] = col[i] * scale;
        }
        return (values, vectors);
    }
}
