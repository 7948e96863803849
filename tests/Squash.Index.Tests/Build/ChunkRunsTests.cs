using Squash.Index.Build.Stages;
using Squash.Index.Format;

namespace Squash.Index.Tests.Build;

/// <summary>
/// The blobs an assign task hands the encode tasks: one runs blob per chunk (partition runs back to back), its index, and
/// each encode task's layout. Every run is found where the index says, whole and checked, from a ranged read of several.
/// </summary>
public sealed class ChunkRunsTests
{
    private static PartitionRun Run(int seed, int count, int dims)
    {
        var rng = new Random(seed);
        var ids = Enumerable.Range(0, count).Select(i => seed * 1000 + i * 3).ToArray();
        return new PartitionRun(ids, Enumerable.Range(0, count * dims).Select(_ => (float)rng.NextDouble()).ToArray(), dims);
    }

    [Fact]
    public void EveryRunIsReadBackFromARangeCoveringSeveral()
    {
        const int dims = 5;
        var runs = new (int, PartitionRun)[] { (2, Run(1, 7, dims)), (5, Run(2, 1, dims)), (9, Run(3, 40, dims)), (11, Run(4, 3, dims)) };
        var (blob, index) = ChunkRuns.Write(runs);
        var parsed = ChunkRunIndex.FromBytes(index.ToBytes(), "c000003.idx");
        Assert.Equal([2, 5, 9, 11], parsed.Partitions);
        Assert.Equal([7, 1, 40, 3], parsed.Counts);
        Assert.Equal(blob.LongLength, parsed.Offsets[^1]);
        // A range holding runs 1..2 (partitions 5 and 9), as an encode task of those two partitions reads it.
        long start = parsed.Offsets[1], end = parsed.Offsets[3];
        var range = blob[(int)start..(int)end];
        for (int i = 1; i <= 2; i++)
        {
            var run = ChunkRuns.Slice(range, start, parsed.Offsets[i], parsed.Offsets[i + 1] - parsed.Offsets[i], dims, "c000003.run");
            Assert.Equal(runs[i].Item2.Ids, run.Ids);
            Assert.Equal(runs[i].Item2.Vectors, run.Vectors);
        }
        // A run outside the range read, or a damaged byte, is an error naming the blob.
        Assert.Throws<ArgumentOutOfRangeException>(() => ChunkRuns.Slice(range, start, parsed.Offsets[0], parsed.Offsets[1], dims, "c000003.run"));
        range[100] ^= 1;
        var e = Assert.Throws<CorruptIndexException>(() => ChunkRuns.Slice(range, start, parsed.Offsets[1], parsed.Offsets[2] - parsed.Offsets[1], dims, "c000003.run"));
        Assert.Contains("c000003.run", e.Message);
    }

    [Fact]
    public void RunsOutOfPartitionOrderAreRefusedAndADamagedIndexIsCaught()
    {
        Assert.Throws<ArgumentException>(() => ChunkRuns.Write([(4, Run(1, 2, 3)), (4, Run(2, 2, 3))]));
        var (_, index) = ChunkRuns.Write([(0, Run(1, 2, 3)), (1, Run(2, 2, 3))]);
        var bytes = index.ToBytes();
        bytes[^1] ^= 0xff;
        Assert.Contains("c000000.idx", Assert.Throws<CorruptIndexException>(() => ChunkRunIndex.FromBytes(bytes, "c000000.idx")).Message);
    }

    [Fact]
    public void ALayoutGivesOneRangePerChunkCoveringItsPartitionsRuns()
    {
        // Two partitions (trained 3 and 4) over three chunks; partition 4 has no rows in chunk 1, neither has rows in chunk 2.
        var layout = new EncodeTaskLayout(First: 7, Trained: [3, 4], Chunks: 3, Offsets: [100, 0, 0, 180, 0, 0], Lengths: [80, 50, 0, 30, 0, 0]);
        var back = EncodeTaskLayout.FromBytes(layout.ToBytes(), "t000002.seg");
        Assert.Equal((7, 2, 3), (back.First, back.Partitions, back.Chunks));
        Assert.Equal((100L, 110L), back.Range(0));
        Assert.Equal((0L, 50L), back.Range(1));
        Assert.Equal((0L, 0L), back.Range(2));
        Assert.Equal((180L, 30L), back.Run(1, 0));
    }

    [Theory]
    [InlineData(new long[] { 10, 10, 10, 10 }, 20, new[] { 0, 2, 2, 2 })]
    [InlineData(new long[] { 50, 1, 1, 50, 1 }, 20, new[] { 0, 1, 1, 2, 3, 1, 4, 1 })]
    [InlineData(new long[] { 5, 5, 5 }, 1000, new[] { 0, 3 })]
    public void PartitionsAreGroupedConsecutivelyUpToTheTarget(long[] bytes, long target, int[] expected)
    {
        // expected: (first, count) pairs flattened.
        var groups = EncodeTaskLayout.Group(bytes, target);
        Assert.Equal(expected, groups.SelectMany(g => new[] { g.First, g.Count }).ToArray());
        Assert.Equal(bytes.Length, groups.Sum(g => g.Count));
    }
}
