using Squash.Core.Quantization;

namespace Squash.Core.Tests.Quantization;

public class SmallestKTests
{
    [Theory]
    [InlineData(0, 5)]
    [InlineData(1, 5)]
    [InlineData(7, 3)]
    [InlineData(100, 4)]
    [InlineData(1000, 50)]
    [InlineData(1000, 784)]
    [InlineData(5000, 3000)] // beyond the stack histogram: exercises the rented buffer
    [InlineData(300, 65535)]
    public void MatchesSortByKeyThenIndex(int n, int maxKey)
    {
        var random = new Random(n + maxKey);
        var keys = new ushort[n];
        for (int i = 0; i < n; i++)
        {
            keys[i] = (ushort)random.Next(0, maxKey + 1);
        }

        int[] reference = Enumerable.Range(0, n).OrderBy(i => keys[i]).ThenBy(i => i).ToArray();
        foreach (int keep in new[] { 0, 1, 2, n / 3, n / 2, n - 1, n, n + 5 })
        {
            if (keep < 0)
            {
                continue;
            }

            var selected = new int[Math.Max(keep, 0) + 2];
            int written = SmallestK.Select(keys, keep, selected);
            int expectedCount = Math.Min(keep, n);
            Assert.Equal(expectedCount, written);
            Assert.Equal(reference.Take(expectedCount), selected.Take(written));
        }
    }

    [Fact]
    public void TiesAtTheThresholdKeepTheLowestIndices()
    {
        ushort[] keys = [3, 1, 3, 0, 3, 1, 3];
        var selected = new int[4];
        Assert.Equal(4, SmallestK.Select(keys, 4, selected));
        Assert.Equal([3, 1, 5, 0], selected);
    }

    [Fact]
    public void InvalidArgumentsAreRejected()
    {
        Assert.Equal("keep", Assert.ThrowsAny<ArgumentException>(() => SmallestK.Select([1, 2], -1, new int[2])).ParamName);
        Assert.Equal("selectedIndices", Assert.Throws<ArgumentException>(() => SmallestK.Select([1, 2, 3], 2, new int[1])).ParamName);
    }
}
