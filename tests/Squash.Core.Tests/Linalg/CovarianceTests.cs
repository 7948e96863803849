using FsCheck.Xunit;
using Squash.Core.Linalg;

namespace Squash.Core.Tests.Linalg;

public class CovarianceTests
{
    private static void AssertClose(double[] expected, double[] actual, double relTol, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        double scale = 1e-300;
        foreach (double v in expected)
            scale = Math.Max(scale, Math.Abs(v));
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= relTol * scale, $"{what}[{i}]: expected {expected[i]}, got {actual[i]}");
    }

    private static void CheckAgainstNaive(int count, int dims, int seed)
    {
        var rows = TestMatrices.CorrelatedRows(count, dims, new Random(seed));
        var (mean, cov) = Covariance.Compute(rows, count, dims);
        var (nMean, nCov) = TestMatrices.NaiveCovariance(rows, dims, Enumerable.Range(0, count).ToArray());
        AssertClose(nMean, mean, 1e-13, "mean");
        AssertClose(nCov, cov, 1e-12, "cov");
        for (int i = 0; i < dims; i++)
        {
            for (int j = 0; j < dims; j++)
                Assert.Equal(cov[i * dims + j], cov[j * dims + i]); // exactly symmetric
        }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(1, 7)]
    [InlineData(3, 2)]
    [InlineData(50, 7)]
    [InlineData(127, 33)]
    [InlineData(128, 65)]
    [InlineData(129, 1)]
    [InlineData(300, 129)]
    [InlineData(1000, 33)]
    public void MatchesNaiveDoubleLoop(int count, int dims) => CheckAgainstNaive(count, dims, count * 31 + dims);

    [Property(MaxTest = 25)]
    public void MatchesNaiveProperty(int seed, byte countByte, byte dimsByte) =>
        CheckAgainstNaive(1 + countByte % 300, 1 + dimsByte % 40, seed);

    [Fact]
    public void Dims784MatchesNaive()
    {
        int count = 300, dims = 784;
        var rng = new Random(7);
        var rows = new float[count * dims];
        for (int i = 0; i < rows.Length; i++)
            rows[i] = (float)(TestMatrices.Gaussian(rng) * (1 + i % dims % 5));
        var (mean, cov) = Covariance.Compute(rows, count, dims);
        var (nMean, nCov) = TestMatrices.NaiveCovariance(rows, dims, Enumerable.Range(0, count).ToArray());
        AssertClose(nMean, mean, 1e-13, "mean");
        AssertClose(nCov, cov, 1e-12, "cov");
    }

    [Theory]
    [InlineData(7)]
    [InlineData(65)]
    public void SubsetUsesOnlyListedRows(int dims)
    {
        int count = 400;
        var rows = TestMatrices.CorrelatedRows(count, dims, new Random(dims));
        var rng = new Random(3);
        int[] subset = Enumerable.Range(0, 150).Select(_ => rng.Next(count)).ToArray(); // duplicates allowed
        var (mean, cov) = Covariance.Compute(rows, count, dims, subset);
        var (nMean, nCov) = TestMatrices.NaiveCovariance(rows, dims, subset);
        AssertClose(nMean, mean, 1e-13, "mean");
        AssertClose(nCov, cov, 1e-12, "cov");

        // Same as computing on the gathered rows.
        var gathered = subset.SelectMany(r => rows.AsSpan(r * dims, dims).ToArray()).ToArray();
        var (gMean, gCov) = Covariance.Compute(gathered, subset.Length, dims);
        Assert.Equal(gMean, mean);
        Assert.Equal(gCov, cov);
    }

    [Fact]
    public void DeterministicAcrossRuns()
    {
        int count = 2000, dims = 65;
        var rows = TestMatrices.CorrelatedRows(count, dims, new Random(11));
        var first = Covariance.Compute(rows, count, dims);
        for (int rep = 0; rep < 3; rep++)
        {
            var again = Covariance.Compute(rows, count, dims);
            Assert.Equal(first.Mean, again.Mean);
            Assert.Equal(first.Matrix, again.Matrix);
        }
    }

    [Fact]
    public void ConstantDataHasZeroCovariance()
    {
        var rows = Enumerable.Repeat(3.25f, 10 * 3).ToArray();
        var (mean, cov) = Covariance.Compute(rows, 10, 3);
        Assert.All(mean, m => Assert.Equal(3.25, m));
        Assert.All(cov, c => Assert.Equal(0.0, c));
    }

    [Fact]
    public void BadInputRejected()
    {
        var rows = new float[12];
        Assert.Throws<ArgumentException>(() => Covariance.Compute(rows, 0, 3));
        Assert.Throws<ArgumentException>(() => Covariance.Compute(rows, 4, 0));
        Assert.Throws<ArgumentException>(() => Covariance.Compute(rows, 5, 3));
        Assert.ThrowsAny<ArgumentException>(() => Covariance.Compute(rows, 4, 3, [0, 4]));
        Assert.ThrowsAny<ArgumentException>(() => Covariance.Compute(rows, 4, 3, [-1]));
    }
}
