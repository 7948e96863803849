using Squash.Core.Linalg;
using Squash.Core.Quantization;
using Squash.Index.Model;

namespace Squash.Index.Build;

/// <summary>Encodes one partition: its own KLT, bit allocation, pinned-zero Lloyd cells, sign codes, residual norms.</summary>
public static class PartitionEncoder
{
    public sealed record Result(PartitionCodes Codes, PartitionVectors Vectors);

    /// <summary>
    /// A partition from its own rows: <paramref name="x"/> holds them in the internal space (n × d, in the order of
    /// <paramref name="ids"/>, ascending). Projects them into the global subspace, keeps the energy outside it for the
    /// residual norms, encodes them (<see cref="Encode"/>), and gives the routing centroid (their mean) and radius (the
    /// farthest row). What a build does for each partition, and ingest for each part of a partition it splits.
    /// </summary>
    public static (Result Encoded, float[] Centroid, float Radius) EncodeRows(int id, int[] ids, float[] x, int d, Klt global, int budgetBits, int maxBits)
    {
        int n = ids.Length, m = global.OutputDims;
        var y = new float[(long)n * m];
        global.ProjectMany(x.AsSpan(0, n * d), n, y);
        // Residual bookkeeping: ‖x − μ_g‖² − ‖y‖², the energy outside the global subspace.
        var outsideGlobal = new double[n];
        for (int i = 0; i < n; i++)
        {
            double s = 0, t = 0;
            var row = x.AsSpan(i * d, d);
            for (int j = 0; j < d; j++) { double v = row[j] - (double)global.Mean[j]; s += v * v; }
            foreach (float v in y.AsSpan(i * m, m)) t += (double)v * v;
            outsideGlobal[i] = s - t;
        }
        var encoded = Encode(id, Enumerable.Range(0, n).ToArray(), x, d, y, m, outsideGlobal, budgetBits, maxBits, ids);
        var centroid = new float[d];
        CentroidAndRadius(x, d, n, centroid, out float radius);
        return (encoded, centroid, radius);
    }

    private static void CentroidAndRadius(float[] x, int d, int n, Span<float> centroid, out float radius)
    {
        var sum = new double[d];
        for (int r = 0; r < n; r++)
        {
            var row = x.AsSpan(r * d, d);
            for (int j = 0; j < d; j++) sum[j] += row[j];
        }
        for (int j = 0; j < d; j++) centroid[j] = n == 0 ? 0 : (float)(sum[j] / n);
        double max = 0;
        for (int r = 0; r < n; r++)
        {
            var row = x.AsSpan(r * d, d);
            double s = 0;
            for (int j = 0; j < d; j++) { double v = row[j] - (double)centroid[j]; s += v * v; }
            max = Math.Max(max, s);
        }
        // Rounded up a little so that the radius stays a true bound after float conversion.
        radius = (float)(Math.Sqrt(max) * (1 + 1e-6) + 1e-6);
    }

    /// <param name="rows">Member row numbers, ascending.</param>
    /// <param name="x">All vectors in the internal space (n × d).</param>
    /// <param name="y">All vectors in global KLT coordinates (n × m).</param>
    /// <param name="outsideGlobal">‖x − μ_g‖² − ‖y‖² per row.</param>
    /// <param name="ids">The rows' ids when they are not <paramref name="rows"/> themselves (a partition encoded from its own rows only).</param>
    public static Result Encode(int id, int[] rows, float[] x, int d, float[] y, int m, double[] outsideGlobal, int budgetBits, int maxBits, int[]? ids = null)
    {
        int n = rows.Length;
        var (meanD, cov) = Covariance.Compute(y, y.Length / m, m, rows);
        var (values, vectors) = SymmetricEigen.Decompose(cov, m);
        var widths = BitAllocation.Allocate(values, budgetBits, maxBits, Math.Max(1, n));
        // A partition without spread (one row, or copies of one vector) gets no bits from the allocation; it keeps one
        // coded dimension so that its codes have the shape every other partition's have.
        if (widths.Length > 0 && widths[0] == 0) widths[0] = 1;
        int md = widths.Count(w => w > 0);
        for (int j = 0; j < md; j++)
            if (widths[j] == 0) throw new InvalidOperationException("bit allocation is not a prefix of the eigenvalue order");

        var mean = meanD.Select(v => (float)v).ToArray();
        var rotation = new float[(long)md * m];
        for (int i = 0; i < md; i++)
            for (int j = 0; j < m; j++)
                rotation[i * m + j] = (float)vectors[j * m + i];
        var local = Klt.FromParts(mean, rotation, values, m, md);

        // z = V_p (y − μ_p) for every member.
        var ym = new float[(long)n * m];
        for (int i = 0; i < n; i++) y.AsSpan(rows[i] * m, m).CopyTo(ym.AsSpan(i * m, m));
        var z = new float[(long)n * md];
        if (md > 0) local.ProjectMany(ym, n, z);

        // Cell boundaries per dimension, middle boundary at 0 so that the top bit of a code is its sign.
        var widthBytes = widths.Take(md).Select(w => (byte)w).ToArray();
        var offsets = PartitionCodes.OffsetsFor(widthBytes, out int totalBoundaries);
        var boundaries = new float[totalBoundaries];
        var cells = new byte[(long)n * md];
        Parallel.For(0, md, j =>
        {
            var column = new float[n];
            for (int i = 0; i < n; i++) column[i] = z[i * md + j];
            var sorted = (float[])column.Clone();
            Array.Sort(sorted);
            var b = LloydBoundaries.Fit(sorted, widthBytes[j], pinZero: true);
            b.CopyTo(boundaries.AsSpan(offsets[j], b.Length));
            for (int i = 0; i < n; i++) cells[i * md + j] = (byte)LloydBoundaries.Encode(b, column[i]);
        });

        int words = SignCodes.WordsFor(md);
        var signs = new ulong[(long)n * words];
        var residual = new float[n];
        var raw = new float[(long)n * d];
        for (int i = 0; i < n; i++)
        {
            var zi = z.AsSpan(i * md, md);
            SignCodes.Encode(zi, signs.AsSpan(i * words, words));
            // ‖e‖² = (‖x−μ_g‖² − ‖y‖²) + ‖y − μ_p‖² − ‖z‖²
            double inside = 0, coded = 0;
            var yi = ym.AsSpan(i * m, m);
            for (int j = 0; j < m; j++) { double v = yi[j] - (double)mean[j]; inside += v * v; }
            foreach (float v in zi) coded += (double)v * v;
            residual[i] = (float)Math.Sqrt(Math.Max(0, outsideGlobal[rows[i]] + inside - coded));
            x.AsSpan(rows[i] * d, d).CopyTo(raw.AsSpan(i * d, d));
        }

        var codes = new PartitionCodes
        {
            Id = id,
            Count = n,
            GlobalDimensions = m,
            CodedDimensions = md,
            Mean = mean,
            Rotation = rotation,
            Eigenvalues = values,
            Widths = widthBytes,
            Boundaries = boundaries,
            BoundaryOffsets = offsets,
            Signs = signs,
            SignWords = words,
            Cells = cells,
            ResidualNorms = residual,
            Ids = ids ?? rows,
        };
        return new Result(codes, new PartitionVectors { Count = n, Dimensions = d, Data = raw });
    }
}
