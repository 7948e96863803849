using Squash.Core.Kernels;

namespace Squash.Core.Tests.Kernels;

public class SquaredL2BoundedTests
{
    [Theory]
    [MemberData(nameof(KernelTestData.Lengths), MemberType = typeof(KernelTestData))]
    public void WithoutStoppingIsBitIdenticalToSquaredL2(int length)
    {
        float[] a = KernelTestData.Random(length, 3000 + length);
        float[] b = KernelTestData.Random(length, 9000 + length);
        float exact = SquaredL2.Distance(a, b);

        Assert.Equal(exact, SquaredL2Bounded.Distance(a, b, float.PositiveInfinity));
        // A bound equal to the exact value can never be exceeded by a partial sum.
        Assert.Equal(exact, SquaredL2Bounded.Distance(a, b, exact));
    }

    [Theory]
    [MemberData(nameof(KernelTestData.Lengths), MemberType = typeof(KernelTestData))]
    public void WhenTheBoundIsBelowTheDistanceTheResultExceedsIt(int length)
    {
        float[] a = KernelTestData.Random(length, 4000 + length);
        float[] b = KernelTestData.Random(length, 8000 + length);
        float exact = SquaredL2.Distance(a, b);
        if (exact == 0)
        {
            return;
        }

        float bound = exact * 0.5f;
        float result = SquaredL2Bounded.Distance(a, b, bound);
        Assert.True(result > bound, $"n={length}: {result} ≤ {bound}");
        Assert.True(result <= exact, $"n={length}: {result} > exact {exact}");
    }

    [Theory]
    [InlineData(128)]
    [InlineData(784)]
    public void StopsEarlyWhenThePrefixAlreadyExceedsTheBound(int length)
    {
        // The first 64 elements alone exceed the bound; the rest would add a lot more.
        var a = new float[length];
        var b = new float[length];
        for (int i = 0; i < length; i++)
        {
            a[i] = i < 64 ? 10f : 1f;
        }

        float exact = SquaredL2.Distance(a, b);
        float result = SquaredL2Bounded.Distance(a, b, 100f);
        Assert.True(result > 100f);
        Assert.True(result < exact, $"expected an early partial sum, got the exact {exact}");
    }

    [Fact]
    public void APartialSumNeverExceedsTheExactValue()
    {
        // After a check the remaining terms are zero, so partial and final differ only in reduction order:
        // with a different tree than the final one, a partial could round one ulp above the exact value.
        var random = new Random(11);
        for (int trial = 0; trial < 2000; trial++)
        {
            int length = random.Next(64, 200);
            var a = new float[length];
            var b = new float[length];
            int nonZero = random.Next(1, 4) * 64;
            for (int i = 0; i < Math.Min(nonZero, length); i++)
            {
                a[i] = (float)(random.NextDouble() * Math.Pow(10, random.Next(-3, 4)));
            }

            float exact = SquaredL2.Distance(a, b);
            Assert.Equal(exact, SquaredL2Bounded.Distance(a, b, exact));
        }
    }

    [Fact]
    public void LengthMismatchThrows()
    {
        var ex = Assert.Throws<ArgumentException>(() => SquaredL2Bounded.Distance(new float[3], new float[2], 1f));
        Assert.Equal("b", ex.ParamName);
    }
}
