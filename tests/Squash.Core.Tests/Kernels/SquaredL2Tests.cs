using Squash.Core.Kernels;

namespace Squash.Core.Tests.Kernels;

public class SquaredL2Tests
{
    [Theory]
    [MemberData(nameof(KernelTestData.Lengths), MemberType = typeof(KernelTestData))]
    public void MatchesDoublePrecisionReference(int length)
    {
        float[] a = KernelTestData.Random(length, 1000 + length);
        float[] b = KernelTestData.Random(length, 5000 + length);
        double expected = 0;
        for (int i = 0; i < length; i++)
        {
            double d = (double)a[i] - b[i];
            expected += d * d;
        }

        float actual = SquaredL2.Distance(a, b);
        // Terms are ≥ 0, so float summation error is relative to the result itself.
        Assert.True(Math.Abs(actual - expected) <= (1e-5 * expected) + 1e-6, $"n={length}: {actual} vs {expected}");
    }

    [Fact]
    public void IdenticalVectorsAreAtDistanceZero()
    {
        float[] a = KernelTestData.Random(100, 3);
        Assert.Equal(0f, SquaredL2.Distance(a, a));
    }

    [Fact]
    public void LengthMismatchThrows()
    {
        var ex = Assert.Throws<ArgumentException>(() => SquaredL2.Distance(new float[3], new float[4]));
        Assert.Equal("b", ex.ParamName);
    }
}
