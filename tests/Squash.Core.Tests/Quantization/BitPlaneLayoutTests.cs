using Squash.Core.Quantization;

namespace Squash.Core.Tests.Quantization;

public class BitPlaneLayoutTests
{
    private static readonly int[] Dims = [0, 1, 7, 33, 65, 129, 784];

    // Around the 16- and 32-vector SIMD blocks: 50 = one AVX2 block + one SSE2 block + 2 scalar rows.
    private static readonly int[] Counts = [0, 1, 15, 16, 17, 31, 32, 33, 50, 1000];

    public static IEnumerable<object[]> Shapes()
    {
        foreach (int dims in Dims)
        {
            foreach (int count in Counts)
            {
                yield return [dims, count];
            }
        }
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void PackThenExtractRoundTripsForRandomWidths(int dims, int count)
    {
        var random = new Random((dims * 1009) + count);
        foreach (string widthKind in new[] { "random", "all8", "all0", "all4" })
        {
            int[] widths = MakeWidths(dims, widthKind, random);
            var layout = new BitPlaneLayout(widths);
            byte[] codes = RandomCodes(widths, count, random);
            var planes = new byte[layout.SegmentCount * count];
            layout.Pack(codes, count, planes);

            Assert.Equal(NaivePlanes(widths, codes, count), planes);

            // Poison the outputs so a skipped element cannot pass by accident.
            var all = new byte[count * dims];
            all.AsSpan().Fill(0xAB);
            layout.ExtractAll(planes, count, all);
            Assert.Equal(codes, all);

            var column = new byte[count];
            for (int d = 0; d < dims; d++)
            {
                column.AsSpan().Fill(0xCD);
                layout.ExtractDimension(planes, count, d, column);
                for (int i = 0; i < count; i++)
                {
                    if (codes[(i * dims) + d] != column[i])
                    {
                        Assert.Fail($"{widthKind}: dim {d} (width {widths[d]}), vector {i}: {column[i]} ≠ {codes[(i * dims) + d]}");
                    }
                }
            }
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(33)]
    [InlineData(784)]
    public void GeometryMatchesPrefixSumsOfWidths(int dims)
    {
        var random = new Random(dims);
        int[] widths = MakeWidths(dims, "random", random);
        var layout = new BitPlaneLayout(widths);
        int bit = 0;
        for (int d = 0; d < dims; d++)
        {
            Assert.Equal(bit / 8, layout.StartSegment(d));
            Assert.Equal(bit % 8, layout.BitOffset(d));
            Assert.Equal(widths[d], layout.Width(d));
            bit += widths[d];
        }

        Assert.Equal(dims, layout.Dimensions);
        Assert.Equal(bit, layout.TotalBits);
        Assert.Equal((bit + 7) / 8, layout.SegmentCount);
    }

    [Fact]
    public void SegmentCountRoundsUp()
    {
        Assert.Equal(0, new BitPlaneLayout([0, 0]).SegmentCount);
        Assert.Equal(1, new BitPlaneLayout([1]).SegmentCount);
        Assert.Equal(1, new BitPlaneLayout([3, 5]).SegmentCount);
        Assert.Equal(2, new BitPlaneLayout([3, 6]).SegmentCount);
        Assert.Equal(392, new BitPlaneLayout(Enumerable.Repeat(4, 784).ToArray()).SegmentCount);
    }

    [Fact]
    public void CodesStraddlingASegmentAreSplitMsbFirst()
    {
        // Widths 3, 7: bits "101" + "1100110" + padding → 1011 1001 | 10 000000.
        var layout = new BitPlaneLayout([3, 7]);
        var planes = new byte[2];
        layout.Pack([0b101, 0b1100110], 1, planes);
        Assert.Equal([0b1011_1001, 0b1000_0000], planes);
    }

    [Fact]
    public void InvalidInputsAreRejected()
    {
        Assert.Equal("widths", Assert.ThrowsAny<ArgumentException>(() => new BitPlaneLayout([9])).ParamName);
        Assert.Equal("widths", Assert.ThrowsAny<ArgumentException>(() => new BitPlaneLayout([-1])).ParamName);
        var layout = new BitPlaneLayout([2, 0]);
        Assert.Equal("codes", Assert.Throws<ArgumentException>(() => layout.Pack([4, 0], 1, new byte[1])).ParamName);
        Assert.Equal("codes", Assert.Throws<ArgumentException>(() => layout.Pack([1, 1], 1, new byte[1])).ParamName);
        Assert.Equal("planes", Assert.Throws<ArgumentException>(() => layout.Pack([1, 0, 1, 0], 2, new byte[1])).ParamName);
        Assert.Equal("dim", Assert.ThrowsAny<ArgumentException>(() => layout.ExtractDimension(new byte[1], 1, 2, new byte[1])).ParamName);
        Assert.Equal("codes", Assert.Throws<ArgumentException>(() => layout.ExtractAll(new byte[2], 2, new byte[3])).ParamName);
    }

    private static int[] MakeWidths(int dims, string kind, Random random)
    {
        var widths = new int[dims];
        for (int d = 0; d < dims; d++)
        {
            widths[d] = kind switch
            {
                "all8" => 8,
                "all0" => 0,
                "all4" => 4,
                _ => random.Next(0, 9),
            };
        }

        return widths;
    }

    private static byte[] RandomCodes(int[] widths, int count, Random random)
    {
        int dims = widths.Length;
        var codes = new byte[count * dims];
        for (int i = 0; i < count; i++)
        {
            for (int d = 0; d < dims; d++)
            {
                codes[(i * dims) + d] = (byte)random.Next(0, 1 << widths[d]);
            }
        }

        return codes;
    }

    /// <summary>The layout spelled out: a per-vector list of bits, MSB first, cut into bytes, stored segment-major.</summary>
    private static byte[] NaivePlanes(int[] widths, byte[] codes, int count)
    {
        int dims = widths.Length;
        int segments = (widths.Sum() + 7) / 8;
        var planes = new byte[segments * count];
        for (int i = 0; i < count; i++)
        {
            var bits = new List<int>();
            for (int d = 0; d < dims; d++)
            {
                for (int k = widths[d] - 1; k >= 0; k--)
                {
                    bits.Add((codes[(i * dims) + d] >> k) & 1);
                }
            }

            for (int p = 0; p < bits.Count; p++)
            {
                planes[((p / 8) * count) + i] |= (byte)(bits[p] << (7 - (p % 8)));
            }
        }

        return planes;
    }
}
