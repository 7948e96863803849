namespace Squash.Core.Tests.Kernels;

internal static class KernelTestData
{
    /// <summary>Every length 0..256 (all vector tails of every ladder step) plus 784 (MNIST).</summary>
    public static IEnumerable<object[]> Lengths()
    {
        for (int n = 0; n <= 256; n++)
        {
            yield return [n];
        }

        yield return [784];
    }

    public static float[] Random(int length, int seed)
    {
        var random = new Random(seed);
        var values = new float[length];
        for (int i = 0; i < length; i++)
        {
            values[i] = (float)((random.NextDouble() * 4) - 2);
        }

        return values;
    }
}
