using Squash.Core.Kernels;

namespace Squash.Core.Tests.Kernels;

public class DotProductTests
{
    [Theory]
    [MemberData(nameof(KernelTestData.Lengths), MemberType = typeof(KernelTestData))]
    public void MatchesDoublePrecisionReference(int length)
    {
        float[] a = KernelTestData.Random(length, 2000 + length);
        float[] b = KernelTestData.Random(length, 7000 + length);
        double expected = 0;
        double magnitude = 0;
        for (int i = 0; i < length; i++)
        {
            expected += (double)a[i] * b[i];
            magnitude += Math.Abs((double)a[i] * b[i]);
        }

        float actual = DotProduct.Compute(a, b);
        // Signed terms cancel, so the error scales with Σ|a_i b_i|, not with the result.
        Assert.True(Math.Abs(actual - expected) <= (1e-5 * magnitude) + 1e-6, $"n={length}: {actual} vs {expected}");
    }

    [Fact]
    public void LengthMismatchThrows()
    {
        var ex = Assert.Throws<ArgumentException>(() => DotProduct.Compute(new float[5], new float[4]));
        Assert.Equal("b", ex.ParamName);
    }
}
