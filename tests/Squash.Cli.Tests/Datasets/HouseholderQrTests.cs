using MathNet.Numerics.LinearAlgebra;
using Squash.Cli.Datasets;

namespace Squash.Cli.Tests.Datasets;

/// <summary>
/// The generators' rotations must stay what they were (recorded benchmark figures were measured on that data): the fast
/// QR must give MathNet's Q and R diagonal bit for bit, at every size and through every branch.
/// </summary>
public sealed class HouseholderQrTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(9)]
    [InlineData(17)]
    [InlineData(33)]
    [InlineData(64)]
    [InlineData(129)]
    [InlineData(202)]
    [InlineData(301)]
    public void QAndTheDiagonalOfREqualMathNetsBitForBit(int n)
    {
        var rng = new Random(n);
        var values = new double[n * n];
        for (int i = 0; i < values.Length; i++) values[i] = rng.NextDouble() * 2 - 1;
        AssertSameAsMathNet(values, n);
    }

    /// <summary>A zero column below the diagonal takes MathNet's norm-zero branch; a negative pivot flips the reflector's sign.</summary>
    [Fact]
    public void AZeroColumnAndNegativePivotsFollowMathNetsBranches()
    {
        const int n = 12;
        var rng = new Random(3);
        var values = new double[n * n];
        for (int i = 0; i < values.Length; i++) values[i] = rng.NextDouble() - 0.75;
        for (int row = 0; row < n; row++) values[5 * n + row] = 0; // column 5 is zero
        AssertSameAsMathNet(values, n);
    }

    [Fact]
    public void TheInputIsLeftUnchanged()
    {
        var values = new double[] { 1, 2, 3, 4 };
        HouseholderQr.Factor(values, 2);
        Assert.Equal([1.0, 2, 3, 4], values);
    }

    private static void AssertSameAsMathNet(double[] columnMajor, int n)
    {
        var qr = Matrix<double>.Build.Dense(n, n, (double[])columnMajor.Clone()).QR();
        var (q, diagonal) = HouseholderQr.Factor(columnMajor, n);
        var expectedQ = qr.Q.ToColumnMajorArray();
        for (int i = 0; i < q.Length; i++)
            Assert.True(BitConverter.DoubleToInt64Bits(expectedQ[i]) == BitConverter.DoubleToInt64Bits(q[i]),
                $"n = {n}: Q[{i % n}, {i / n}] is {q[i]:R}, MathNet's {expectedQ[i]:R}");
        for (int k = 0; k < n; k++)
            Assert.True(BitConverter.DoubleToInt64Bits(qr.R[k, k]) == BitConverter.DoubleToInt64Bits(diagonal[k]),
                $"n = {n}: R[{k}, {k}] is {diagonal[k]:R}, MathNet's {qr.R[k, k]:R}");
    }
}
