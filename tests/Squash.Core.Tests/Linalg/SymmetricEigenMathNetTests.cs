using MathNet.Numerics.LinearAlgebra;
using MathNet.Numerics.LinearAlgebra.Double;
using Squash.Core.Linalg;

namespace Squash.Core.Tests.Linalg;

/// <summary>
/// The cache-friendly solver behind <see cref="SymmetricEigen"/> against the MathNet decomposition it replaced: the same
/// eigenvalues, the same eigenvectors up to sign (the same subspaces where eigenvalues repeat), a reconstruction
/// A = VΛVᵀ and an orthonormal V, on random, repeated-eigenvalue, rank-deficient and already-reduced matrices.
/// </summary>
public class SymmetricEigenMathNetTests
{
    /// <summary>The implementation before this solver: MathNet's managed EVD, sorted descending.</summary>
    private static (double[] Values, double[] Vectors) MathNetDecompose(double[] a, int n)
    {
        var evd = DenseMatrix.OfColumnMajor(n, n, (double[])a.Clone()).Evd(Symmetricity.Symmetric);
        var order = Enumerable.Range(0, n).OrderByDescending(j => evd.EigenValues[j].Real).ThenBy(j => j).ToArray();
        var values = order.Select(j => evd.EigenValues[j].Real).ToArray();
        var vectors = new double[n * n];
        for (int c = 0; c < n; c++)
            for (int i = 0; i < n; i++)
                vectors[i * n + c] = evd.EigenVectors[i, order[c]];
        return (values, vectors);
    }

    private static void AssertSameAsMathNet(double[] a, int n)
    {
        var (values, vectors) = SymmetricEigen.Decompose(a, n);
        var (oldValues, oldVectors) = MathNetDecompose(a, n);
        double norm = Math.Max(a.Max(Math.Abs), double.Epsilon) * n;
        double tol = 1e-12 * norm;

        for (int j = 0; j < n; j++)
            Assert.True(Math.Abs(values[j] - oldValues[j]) <= tol, $"n={n} λ{j}: {values[j]} vs MathNet {oldValues[j]}");

        // ‖A − VΛVᵀ‖max and ‖VᵀV − I‖max.
        var v = Matrix<double>.Build.DenseOfRowMajor(n, n, vectors);
        var reconstruction = v * DenseMatrix.OfDiagonalArray(values) * v.Transpose();
        double worst = (reconstruction - Matrix<double>.Build.DenseOfRowMajor(n, n, a)).Enumerate().Select(Math.Abs).DefaultIfEmpty().Max();
        Assert.True(worst <= tol, $"n={n}: ‖A − VΛVᵀ‖max = {worst}");
        double ortho = (v.TransposeThisAndMultiply(v) - DenseMatrix.CreateIdentity(n)).Enumerate().Select(Math.Abs).Max();
        Assert.True(ortho <= 1e-13 * n + 1e-14, $"n={n}: ‖VᵀV − I‖max = {ortho}");

        // Eigenvectors: per cluster of (nearly) equal eigenvalues, the new columns lie in the span of MathNet's.
        var old = Matrix<double>.Build.DenseOfRowMajor(n, n, oldVectors);
        double clusterGap = 1e-6 * norm;
        for (int start = 0; start < n;)
        {
            int end = start + 1;
            while (end < n && oldValues[end - 1] - oldValues[end] <= clusterGap) end++;
            var mine = v.SubMatrix(0, n, start, end - start);
            var theirs = old.SubMatrix(0, n, start, end - start);
            // Distance to the other cluster bounds the angle: ε‖A‖ / gap, with gap ≥ 1e-6‖A‖.
            var residual = mine - theirs * theirs.TransposeThisAndMultiply(mine);
            double off = residual.Enumerate().Select(Math.Abs).Max();
            Assert.True(off <= 1e-8, $"n={n}: eigenvectors {start}..{end - 1} differ from MathNet's subspace by {off}");
            if (end - start == 1)
            {
                // A simple eigenvalue: the same vector, same sign (both use the largest-component-positive rule).
                double dot = mine.Column(0) * theirs.Column(0);
                Assert.True(Math.Abs(dot) >= 1 - 1e-10, $"n={n} vector {start}: |cos| = {Math.Abs(dot)}");
            }
            start = end;
        }
    }

    private static double[] FromSpectrum(double[] spectrum, Random rng)
    {
        int n = spectrum.Length;
        var q = SymmetricEigen.Decompose(TestMatrices.RandomSymmetric(n, rng), n).Vectors;
        var a = new double[n * n];
        for (int i = 0; i < n; i++)
            for (int j = i; j < n; j++)
            {
                double s = 0;
                for (int k = 0; k < n; k++) s += q[i * n + k] * spectrum[k] * q[j * n + k];
                a[i * n + j] = s;
                a[j * n + i] = s;
            }
        return a;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(16)]
    [InlineData(17)]
    [InlineData(100)]
    [InlineData(257)]
    [InlineData(300)]
    public void RandomSymmetricMatchesMathNet(int n) => AssertSameAsMathNet(TestMatrices.RandomSymmetric(n, new Random(n)), n);

    [Theory]
    [InlineData(20, 300)]  // rows < dims: 280 zero eigenvalues
    [InlineData(299, 300)]
    [InlineData(500, 260)]
    public void RankDeficientCovarianceMatchesMathNet(int rows, int dims)
    {
        var x = TestMatrices.CorrelatedRows(rows, dims, new Random(rows + dims));
        var (_, cov) = Covariance.Compute(x, rows, dims);
        AssertSameAsMathNet(cov, dims);
    }

    [Theory]
    [InlineData(40)]
    [InlineData(130)]
    public void RepeatedEigenvaluesMatchMathNet(int n)
    {
        // Three eigenvalues, each repeated about n/3 times, one of them 0.
        var spectrum = Enumerable.Range(0, n).Select(i => (i % 3) switch { 0 => 5.0, 1 => -2.0, _ => 0.0 }).ToArray();
        AssertSameAsMathNet(FromSpectrum(spectrum, new Random(n)), n);
    }

    [Fact]
    public void StructuredMatricesMatchMathNet()
    {
        // Zero, identity, diagonal, already tridiagonal, block-diagonal (columns already reduced), tiny and huge scales.
        int n = 37;
        AssertSameAsMathNet(new double[n * n], n);
        var identity = new double[n * n];
        for (int i = 0; i < n; i++) identity[i * n + i] = 1;
        AssertSameAsMathNet(identity, n);
        var diagonal = new double[n * n];
        for (int i = 0; i < n; i++) diagonal[i * n + i] = (i * 7919 % n) - n / 2;
        AssertSameAsMathNet(diagonal, n);
        var tri = new double[n * n];
        for (int i = 0; i < n; i++)
        {
            tri[i * n + i] = 2;
            if (i + 1 < n) tri[i * n + i + 1] = tri[(i + 1) * n + i] = -1;
        }
        AssertSameAsMathNet(tri, n);
        var block = TestMatrices.RandomSymmetric(n, new Random(3));
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                if ((i < 10) != (j < 10)) block[i * n + j] = 0;
        AssertSameAsMathNet(block, n);
    }

    [Theory]
    [InlineData(-660)]
    [InlineData(660)]
    public void ExtremeScalesGiveTheScaledDecomposition(int exponent)
    {
        // Far from 1 MathNet itself loses digits (subnormal intermediates); this solver works on a power-of-two scaling
        // of the matrix, so 2^k·A decomposes exactly as A with the eigenvalues times 2^k.
        int n = 37;
        var a = TestMatrices.RandomSymmetric(n, new Random(4));
        var (values, vectors) = SymmetricEigen.Decompose(a, n);
        var (scaledValues, scaledVectors) = SymmetricEigen.Decompose(a.Select(v => Math.ScaleB(v, exponent)).ToArray(), n);
        Assert.Equal(values.Select(v => Math.ScaleB(v, exponent)), scaledValues);
        Assert.Equal(vectors, scaledVectors);
    }
}
