namespace Squash.Core.Tests.Linalg;

/// <summary>Seeded generators shared by the linear-algebra and partitioning tests.</summary>
internal static class TestMatrices
{
    public static readonly int[] AwkwardDims = [1, 2, 7, 33, 65, 129];

    public static double Gaussian(Random rng)
    {
        double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }

    public static double[] RandomSymmetric(int n, Random rng)
    {
        var a = new double[n * n];
        for (int i = 0; i < n; i++)
        {
            for (int j = i; j < n; j++)
            {
                double v = rng.NextDouble() * 2 - 1;
                a[i * n + j] = v;
                a[j * n + i] = v;
            }
        }
        return a;
    }

    /// <summary>Correlated rows x = mean + A·g with a random mixing matrix and per-axis scales (anisotropic).</summary>
    public static float[] CorrelatedRows(int count, int dims, Random rng)
    {
        var mix = new double[dims * dims];
        for (int i = 0; i < mix.Length; i++)
            mix[i] = Gaussian(rng) / Math.Sqrt(dims);
        var scale = new double[dims];
        var mean = new double[dims];
        for (int k = 0; k < dims; k++)
        {
            scale[k] = 0.2 + 3.0 * rng.NextDouble();
            mean[k] = 5 * (rng.NextDouble() - 0.5);
        }
        var rows = new float[count * dims];
        var g = new double[dims];
        for (int r = 0; r < count; r++)
        {
            for (int k = 0; k < dims; k++)
                g[k] = Gaussian(rng) * scale[k];
            for (int i = 0; i < dims; i++)
            {
                double s = mean[i];
                for (int k = 0; k < dims; k++)
                    s += mix[i * dims + k] * g[k];
                rows[r * dims + i] = (float)s;
            }
        }
        return rows;
    }

    /// <summary>Naive float64 mean and population covariance (two-pass).</summary>
    public static (double[] Mean, double[] Cov) NaiveCovariance(ReadOnlySpan<float> rows, int dims, int[] indices)
    {
        var mean = new double[dims];
        foreach (int r in indices)
        {
            for (int k = 0; k < dims; k++)
                mean[k] += rows[r * dims + k];
        }
        for (int k = 0; k < dims; k++)
            mean[k] /= indices.Length;
        var cov = new double[dims * dims];
        var c = new double[dims];
        foreach (int r in indices)
        {
            for (int k = 0; k < dims; k++)
                c[k] = rows[r * dims + k] - mean[k];
            for (int i = 0; i < dims; i++)
            {
                for (int j = 0; j < dims; j++)
                    cov[i * dims + j] += c[i] * c[j];
            }
        }
        for (int i = 0; i < cov.Length; i++)
            cov[i] /= indices.Length;
        return (mean, cov);
    }
}
