using Squash.Core.Collections;

namespace Squash.Core.Tests.Collections;

public class TopKTests
{
    [Theory]
    [InlineData(1, 0, 1)]
    [InlineData(1, 50, 2)]
    [InlineData(10, 5, 3)]
    [InlineData(10, 1000, 4)]
    [InlineData(100, 1000, 5)]
    public void KeepsTheKSmallestWithTiesBrokenById(int k, int n, int seed)
    {
        var rng = new Random(seed);
        // Few distinct distances so that ties are common.
        var items = Enumerable.Range(0, n).Select(i => new Neighbor(i, rng.Next(20))).ToArray();
        var top = new TopK(k);
        foreach (var it in items.OrderBy(_ => rng.Next())) top.TryAdd(it.Id, it.Distance);
        var expected = items.OrderBy(i => i.Distance).ThenBy(i => i.Id).Take(k).ToArray();
        Assert.Equal(expected, top.ToSortedArray());
        Assert.Equal(n >= k ? expected[^1].Distance : float.PositiveInfinity, top.Threshold);
    }

    [Fact]
    public void BoundHeapKeepsTheSmallestBounds()
    {
        var rng = new Random(9);
        var heap = new BoundHeap(7);
        var all = Enumerable.Range(0, 500).Select(i => ((float)rng.Next(50), i)).ToArray();
        foreach (var (b, r) in all) heap.Push(b, r);
        var expected = all.OrderBy(x => x.Item1).ThenBy(x => x.i).Take(7).ToArray();
        Assert.Equal(expected, heap.SortAscending().ToArray());
    }

    [Fact]
    public void RejectsKBelowOne() => Assert.Throws<ArgumentOutOfRangeException>(() => new TopK(0));
}
