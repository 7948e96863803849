using FsCheck.Xunit;
using Squash.Core.Linalg;

namespace Squash.Core.Tests.Linalg;

public class SymmetricEigenTests
{
    // Residual, orthonormality, ordering and sign convention for one decomposition.
    private static void AssertValidDecomposition(double[] a, int n, double[] values, double[] vectors)
    {
        Assert.Equal(n, values.Length);
        Assert.Equal(n * n, vectors.Length);
        double scale = 1;
        foreach (double v in a)
            scale = Math.Max(scale, Math.Abs(v));
        scale *= n;

        for (int j = 1; j < n; j++)
            Assert.True(values[j - 1] >= values[j], $"values not descending at {j}: {values[j - 1]} < {values[j]}");

        for (int j = 0; j < n; j++)
        {
            double worst = 0;
            for (int i = 0; i < n; i++)
            {
                double av = 0;
                for (int k = 0; k < n; k++)
                    av += a[i * n + k] * vectors[k * n + j];
                worst = Math.Max(worst, Math.Abs(av - values[j] * vectors[i * n + j]));
            }
            Assert.True(worst <= 1e-10 * scale, $"‖Av − λv‖∞ = {worst} for column {j}");

            // Sign convention: the component of largest magnitude is positive (allowing near-ties).
            double maxAbs = 0, maxPos = double.NegativeInfinity;
            for (int i = 0; i < n; i++)
            {
                double v = vectors[i * n + j];
                maxAbs = Math.Max(maxAbs, Math.Abs(v));
                maxPos = Math.Max(maxPos, v);
            }
            Assert.True(maxPos >= maxAbs - 1e-12, $"column {j}: largest-magnitude component is negative");
        }

        for (int p = 0; p < n; p++)
        {
            for (int q = p; q < n; q++)
            {
                double dot = 0;
                for (int i = 0; i < n; i++)
                    dot += vectors[i * n + p] * vectors[i * n + q];
                Assert.True(Math.Abs(dot - (p == q ? 1 : 0)) <= 1e-11, $"VᵀV[{p},{q}] = {dot}");
            }
        }
    }

    [Fact]
    public void Known2x2()
    {
        var (values, vectors) = SymmetricEigen.Decompose([2, 1, 1, 2], 2);
        Assert.Equal(3, values[0], 12);
        Assert.Equal(1, values[1], 12);
        double h = Math.Sqrt(0.5);
        Assert.Equal(h, vectors[0], 12); // column 0 = (1, 1)/√2
        Assert.Equal(h, vectors[2], 12);
        Assert.Equal(h, Math.Abs(vectors[1]), 12); // column 1 = ±(1, −1)/√2
        Assert.Equal(-vectors[1], vectors[3], 12);
    }

    [Fact]
    public void DiagonalGivesSortedUnitVectors()
    {
        var (values, vectors) = SymmetricEigen.Decompose([1, 0, 0, 0, 5, 0, 0, 0, 3], 3);
        Assert.Equal([5, 3, 1], values);
        // Columns are e1, e2, e0 with positive signs.
        double[] expected = [0, 0, 1, 1, 0, 0, 0, 1, 0];
        for (int i = 0; i < 9; i++)
            Assert.Equal(expected[i], vectors[i], 14);
    }

    [Fact]
    public void OneByOne()
    {
        var (values, vectors) = SymmetricEigen.Decompose([-4.5], 1);
        Assert.Equal(-4.5, values[0]);
        Assert.Equal(1.0, vectors[0]);
    }

    [Fact]
    public void NegativeLargestComponentIsFlipped()
    {
        // Eigenvector of 3 is ±(0.6, −0.8)-ish; the convention forces the −0.8 component positive.
        var (_, vectors) = SymmetricEigen.Decompose([1.0, -1.0, -1.0, 2.0], 2);
        double v0 = vectors[0], v1 = vectors[2];
        Assert.True(Math.Abs(v1) > Math.Abs(v0));
        Assert.True(v1 > 0);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(7)]
    [InlineData(33)]
    [InlineData(65)]
    [InlineData(129)]
    public void RandomSymmetricAwkwardSizes(int n)
    {
        var a = TestMatrices.RandomSymmetric(n, new Random(1000 + n));
        var (values, vectors) = SymmetricEigen.Decompose(a, n);
        AssertValidDecomposition(a, n, values, vectors);
    }

    [Property(MaxTest = 40)]
    public void RandomSymmetricProperty(int seed, byte size)
    {
        int n = 1 + size % 24;
        var a = TestMatrices.RandomSymmetric(n, new Random(seed));
        var (values, vectors) = SymmetricEigen.Decompose(a, n);
        AssertValidDecomposition(a, n, values, vectors);
    }

    [Fact]
    public void RepeatedEigenvaluesStillOrthonormal()
    {
        // Q·diag(2,2,2,1,1)·Qᵀ: degenerate eigenspaces must still give an orthonormal basis.
        int n = 5;
        var q = SymmetricEigen.Decompose(TestMatrices.RandomSymmetric(n, new Random(5)), n).Vectors;
        double[] d = [2, 2, 2, 1, 1];
        var a = new double[n * n];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int k = 0; k < n; k++)
                    s += q[i * n + k] * d[k] * q[j * n + k];
                a[i * n + j] = s;
            }
        }
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < i; j++)
                a[i * n + j] = a[j * n + i];
        }
        var (values, vectors) = SymmetricEigen.Decompose(a, n);
        AssertValidDecomposition(a, n, values, vectors);
        for (int j = 0; j < n; j++)
            Assert.Equal(d[j], values[j], 12);
    }

    [Fact]
    public void Size784CovarianceLike()
    {
        // Kept to a single large case: a rank-deficient, PSD matrix like a real covariance.
        int n = 784;
        var rng = new Random(784);
        var rows = TestMatrices.CorrelatedRows(600, n, rng);
        var (_, cov) = Covariance.Compute(rows, 600, n);
        var (values, vectors) = SymmetricEigen.Decompose(cov, n);

        for (int j = 1; j < n; j++)
            Assert.True(values[j - 1] >= values[j]);
        Assert.True(values[n - 1] > -1e-9 * values[0], "PSD matrix produced a clearly negative eigenvalue");

        // Spot-check residuals and orthonormality on a few columns (full check is O(n³) in a test).
        double scale = values[0] * n;
        foreach (int j in new[] { 0, 1, 17, 300, 598, 599, 783 })
        {
            double worst = 0, norm = 0;
            for (int i = 0; i < n; i++)
            {
                double av = 0;
                for (int k = 0; k < n; k++)
                    av += cov[i * n + k] * vectors[k * n + j];
                worst = Math.Max(worst, Math.Abs(av - values[j] * vectors[i * n + j]));
                norm += vectors[i * n + j] * vectors[i * n + j];
            }
            Assert.True(worst <= 1e-10 * scale, $"column {j}: residual {worst}");
            Assert.Equal(1.0, norm, 10);
            double dot = 0;
            for (int i = 0; i < n; i++)
                dot += vectors[i * n + j] * vectors[i * n + (j + 1) % n];
            Assert.True(Math.Abs(dot) < 1e-10);
        }
    }

    [Fact]
    public void BadInputRejected()
    {
        Assert.Throws<ArgumentException>(() => SymmetricEigen.Decompose([], 0));
        Assert.Throws<ArgumentException>(() => SymmetricEigen.Decompose([1, 2, 3], 2));
        Assert.Throws<ArgumentException>(() => SymmetricEigen.Decompose([1, 2, 2, 1, 0], 2));
        Assert.Throws<ArgumentException>(() => SymmetricEigen.Decompose([1, double.NaN, double.NaN, 1], 2));
        Assert.Throws<ArgumentException>(() => SymmetricEigen.Decompose([double.PositiveInfinity, 0, 0, 1], 2));
        Assert.Throws<ArgumentException>(() => SymmetricEigen.Decompose([1, 2, 2.001, 1], 2));
        Assert.Throws<ArgumentException>(() => SymmetricEigen.Decompose([1], -1));
    }

    [Fact]
    public void TinyAsymmetryIsTolerated()
    {
        var (values, _) = SymmetricEigen.Decompose([2, 1, 1 + 1e-13, 2], 2);
        Assert.Equal(3, values[0], 10);
    }
}
