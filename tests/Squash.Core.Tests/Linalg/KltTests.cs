using FsCheck.Xunit;
using Squash.Core.Linalg;

namespace Squash.Core.Tests.Linalg;

public class KltTests
{
    private static float[] ProjectAll(Klt klt, float[] rows, int count)
    {
        var z = new float[count * klt.OutputDims];
        klt.ProjectMany(rows, count, z);
        return z;
    }

    // Covariance of z is diagonal, its diagonal equals the leading eigenvalues, and they descend.
    private static void AssertDecorrelated(int count, int dims, int outputDims, int seed)
    {
        var rows = TestMatrices.CorrelatedRows(count, dims, new Random(seed));
        var klt = Klt.Fit(rows, count, dims, outputDims);
        Assert.Equal(dims, klt.InputDims);
        Assert.Equal(outputDims, klt.OutputDims);
        Assert.Equal(dims, klt.Eigenvalues.Length);
        Assert.Equal(dims, klt.Mean.Length);
        Assert.Equal(outputDims * dims, klt.Basis.Length);

        var z = ProjectAll(klt, rows, count);
        var (zMean, zCov) = TestMatrices.NaiveCovariance(z, outputDims, Enumerable.Range(0, count).ToArray());
        double top = Math.Max(klt.Eigenvalues[0], 1e-30);
        for (int i = 0; i < outputDims; i++)
        {
            Assert.True(Math.Abs(zMean[i]) <= 1e-4 * Math.Sqrt(top) + 1e-5, $"mean of z[{i}] = {zMean[i]}");
            double lambda = klt.Eigenvalues[i];
            Assert.True(Math.Abs(zCov[i * outputDims + i] - lambda) <= 1e-4 * top, $"var z[{i}] = {zCov[i * outputDims + i]}, λ = {lambda}");
            if (i > 0)
                Assert.True(klt.Eigenvalues[i - 1] >= klt.Eigenvalues[i]);
            for (int j = 0; j < i; j++)
            {
                double off = Math.Abs(zCov[i * outputDims + j]);
                Assert.True(off <= 1e-4 * top, $"cov z[{i},{j}] = {off} (top variance {top})");
            }
        }
        for (int i = 1; i < dims; i++)
            Assert.True(klt.Eigenvalues[i - 1] >= klt.Eigenvalues[i]);
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 2)]
    [InlineData(7, 7)]
    [InlineData(7, 3)]
    [InlineData(33, 33)]
    [InlineData(65, 20)]
    [InlineData(129, 129)]
    public void ProjectionIsDecorrelatedWithEigenvalueVariances(int dims, int outputDims) =>
        AssertDecorrelated(Math.Max(400, 3 * dims), dims, outputDims, 100 + dims);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(7)]
    [InlineData(33)]
    [InlineData(65)]
    [InlineData(129)]
    public void FullRotationPreservesDistances(int dims)
    {
        int count = 200;
        var rows = TestMatrices.CorrelatedRows(count, dims, new Random(dims * 7));
        var klt = Klt.Fit(rows, count, dims, dims);
        var z = ProjectAll(klt, rows, count);
        var rng = new Random(1);
        for (int t = 0; t < 100; t++)
        {
            int a = rng.Next(count), b = rng.Next(count);
            double dx = 0, dz = 0;
            for (int k = 0; k < dims; k++)
            {
                double d = rows[a * dims + k] - rows[b * dims + k];
                dx += d * d;
                double e = z[a * dims + k] - z[b * dims + k];
                dz += e * e;
            }
            Assert.True(Math.Abs(Math.Sqrt(dx) - Math.Sqrt(dz)) <= 1e-4 * (1 + Math.Sqrt(dx)), $"‖x_a−x_b‖ = {Math.Sqrt(dx)}, ‖z_a−z_b‖ = {Math.Sqrt(dz)}");
        }

        // Basis rows are orthonormal.
        for (int i = 0; i < dims; i++)
        {
            for (int j = 0; j <= i; j++)
            {
                double dot = 0;
                for (int k = 0; k < dims; k++)
                    dot += (double)klt.Basis[i * dims + k] * klt.Basis[j * dims + k];
                Assert.True(Math.Abs(dot - (i == j ? 1 : 0)) <= 1e-5, $"basis[{i}]·basis[{j}] = {dot}");
            }
        }
    }

    private static void AssertProjectManyMatchesProject(int count, int dims, int outputDims, int seed)
    {
        var rng = new Random(seed);
        var fitRows = TestMatrices.CorrelatedRows(Math.Max(2 * dims, 60), dims, rng);
        var klt = Klt.Fit(fitRows, fitRows.Length / dims, dims, outputDims);
        var rows = new float[count * dims];
        for (int i = 0; i < rows.Length; i++)
            rows[i] = (float)(TestMatrices.Gaussian(rng) * 3);

        var many = ProjectAll(klt, rows, count);
        var one = new float[outputDims];
        for (int r = 0; r < count; r++)
        {
            klt.Project(rows.AsSpan(r * dims, dims), one);
            for (int o = 0; o < outputDims; o++)
            {
                int expected = BitConverter.SingleToInt32Bits(one[o]);
                int actual = BitConverter.SingleToInt32Bits(many[r * outputDims + o]);
                Assert.True(expected == actual, $"row {r} out {o}: Project {one[o]} vs ProjectMany {many[r * outputDims + o]}");
            }
        }
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(2, 2, 1)]
    [InlineData(3, 7, 5)]
    [InlineData(47, 33, 4)]
    [InlineData(48, 65, 65)]
    [InlineData(49, 129, 7)]
    [InlineData(200, 129, 100)]
    public void ProjectManyIsBitwiseProject(int count, int dims, int outputDims) =>
        AssertProjectManyMatchesProject(count, dims, outputDims, count + dims + outputDims);

    [Property(MaxTest = 25)]
    public void ProjectManyIsBitwiseProjectProperty(int seed, byte countByte, byte dimsByte, byte outByte)
    {
        int dims = 1 + dimsByte % 70;
        AssertProjectManyMatchesProject(1 + countByte % 120, dims, 1 + outByte % dims, seed);
    }

    [Fact]
    public void Dims784To400()
    {
        int count = 900, dims = 784, outputDims = 400;
        var rng = new Random(784);
        var rows = new float[count * dims];
        // Low-rank structure plus noise so there is real correlation to remove.
        var factors = new float[16 * dims];
        for (int i = 0; i < factors.Length; i++)
            factors[i] = (float)TestMatrices.Gaussian(rng);
        for (int r = 0; r < count; r++)
        {
            for (int f = 0; f < 16; f++)
            {
                float w = (float)(TestMatrices.Gaussian(rng) * (16 - f));
                for (int k = 0; k < dims; k++)
                    rows[r * dims + k] += w * factors[f * dims + k];
            }
            for (int k = 0; k < dims; k++)
                rows[r * dims + k] += (float)(0.1 * TestMatrices.Gaussian(rng));
        }
        var klt = Klt.Fit(rows, count, dims, outputDims);
        var z = ProjectAll(klt, rows, count);

        var one = new float[outputDims];
        foreach (int r in new[] { 0, 1, 47, 48, 899 })
        {
            klt.Project(rows.AsSpan(r * dims, dims), one);
            Assert.Equal(one, z.AsSpan(r * outputDims, outputDims).ToArray());
        }

        // The 16 planted factors dominate; their z variances match the eigenvalues and are decorrelated.
        var (_, zCov) = TestMatrices.NaiveCovariance(z, outputDims, Enumerable.Range(0, count).ToArray());
        double top = klt.Eigenvalues[0];
        for (int i = 0; i < 20; i++)
        {
            Assert.True(Math.Abs(zCov[i * outputDims + i] - klt.Eigenvalues[i]) <= 1e-4 * top);
            for (int j = 0; j < i; j++)
                Assert.True(Math.Abs(zCov[i * outputDims + j]) <= 1e-4 * top);
        }
    }

    [Fact]
    public void SubsetFitUsesOnlySubset()
    {
        int count = 300, dims = 9;
        var rows = TestMatrices.CorrelatedRows(count, dims, new Random(4));
        int[] subset = Enumerable.Range(0, count).Where(i => i % 3 == 0).ToArray();
        var a = Klt.Fit(rows, count, dims, 5, subset);
        var gathered = subset.SelectMany(r => rows.AsSpan(r * dims, dims).ToArray()).ToArray();
        var b = Klt.Fit(gathered, subset.Length, dims, 5);
        Assert.Equal(b.Mean, a.Mean);
        Assert.Equal(b.Basis, a.Basis);
        Assert.Equal(b.Eigenvalues, a.Eigenvalues);
    }

    [Fact]
    public void FromPartsRoundTripsAndValidates()
    {
        int count = 100, dims = 12, outputDims = 5;
        var rows = TestMatrices.CorrelatedRows(count, dims, new Random(12));
        var klt = Klt.Fit(rows, count, dims, outputDims);
        var copy = Klt.FromParts((float[])klt.Mean.Clone(), (float[])klt.Basis.Clone(), (double[])klt.Eigenvalues.Clone(), dims, outputDims);
        Assert.Equal(ProjectAll(klt, rows, count), ProjectAll(copy, rows, count));

        Assert.Throws<ArgumentException>(() => Klt.FromParts(new float[dims - 1], klt.Basis, klt.Eigenvalues, dims, outputDims));
        Assert.Throws<ArgumentException>(() => Klt.FromParts(klt.Mean, new float[dims * outputDims + 1], klt.Eigenvalues, dims, outputDims));
        Assert.Throws<ArgumentException>(() => Klt.FromParts(klt.Mean, klt.Basis, new double[outputDims], dims, outputDims));
        Assert.Throws<ArgumentException>(() => Klt.FromParts(klt.Mean, klt.Basis, klt.Eigenvalues, dims, dims + 1));
        Assert.Throws<ArgumentException>(() => Klt.FromParts(klt.Mean, klt.Basis, klt.Eigenvalues, dims, 0));
        var nanMean = (float[])klt.Mean.Clone();
        nanMean[3] = float.NaN;
        Assert.Throws<ArgumentException>(() => Klt.FromParts(nanMean, klt.Basis, klt.Eigenvalues, dims, outputDims));
    }

    [Fact]
    public void BadArgumentsRejected()
    {
        var rows = TestMatrices.CorrelatedRows(20, 4, new Random(1));
        Assert.Throws<ArgumentException>(() => Klt.Fit(rows, 20, 4, 0));
        Assert.Throws<ArgumentException>(() => Klt.Fit(rows, 20, 4, 5));
        var klt = Klt.Fit(rows, 20, 4, 2);
        Assert.Throws<ArgumentException>(() => klt.Project(new float[3], new float[2]));
        Assert.Throws<ArgumentException>(() => klt.Project(new float[4], new float[1]));
        Assert.Throws<ArgumentException>(() => klt.ProjectMany(new float[7], 2, new float[4]));
        Assert.Throws<ArgumentException>(() => klt.ProjectMany(new float[8], 2, new float[3]));
    }
}
