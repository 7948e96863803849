using Squash.Index.Format;
using Squash.Index.Model;

namespace Squash.Index.Tests;

/// <summary>A partition ingest extended: the deletion mask's round trip and checks, and which stored rows readers see.</summary>
public class PartitionCompositionTests
{
    private static PartitionEntry Entry(int count, int baseCount, params int[] appended) => new()
    {
        Id = 3, Count = count, CodedDimensions = 1, BitsPerVector = 1, BaseCount = baseCount,
        Codes = new SegmentRef("p00003.codes.seg", 1), Vectors = new SegmentRef("p00003.vectors.seg", 1),
        Appended = appended.Select(n => new AppendedRows { Count = n, Codes = new SegmentRef("a.codes.seg", 1), Vectors = new SegmentRef("a.vectors.seg", 1) }).ToArray(),
        Deleted = new SegmentRef("p00003.deleted.seg", 1),
    };

    [Fact]
    public void TheMaskRoundTripsOverEveryStoredRowAcrossWordBoundaries()
    {
        // 70 base rows and 3 appended: the mask spans two 64-bit words.
        var rng = new Random(5);
        var mask = Enumerable.Range(0, 73).Select(_ => rng.Next(3) == 0).ToArray();
        var entry = Entry(mask.Count(x => !x), 70, 3);
        Assert.Equal(mask, PartitionComposition.MaskFromSegment(PartitionComposition.MaskToSegment(mask), "m.seg", entry));
    }

    [Fact]
    public void AMaskThatDisagreesWithTheManifestIsCorrupt()
    {
        var mask = new bool[10];
        mask[2] = true;
        var bytes = PartitionComposition.MaskToSegment(mask);
        var wrongCount = Assert.Throws<CorruptIndexException>(() => PartitionComposition.MaskFromSegment(bytes, "p00003.deleted.seg", Entry(8, 8, 2)));
        Assert.Contains("leaves 9 rows; the manifest says 8", wrongCount.Message);
        var wrongLength = Assert.Throws<CorruptIndexException>(() => PartitionComposition.MaskFromSegment(bytes, "p00003.deleted.seg", Entry(9, 8, 3)));
        Assert.Contains("covers 10 rows; the partition stores 11", wrongLength.Message);
    }

    [Fact]
    public void ReadersSeeTheUnmaskedRowsBaseFirstThenEachAppendedSegmentInOrder()
    {
        var mask = new bool[3 + 2 + 2];
        mask[1] = mask[3] = mask[6] = true;
        Assert.Equal([(0, 0), (0, 2), (1, 1), (2, 0)], PartitionComposition.LiveRows([3, 2, 2], mask));
        Assert.Equal([(0, 0), (1, 0)], PartitionComposition.LiveRows([1, 1], null));
    }

    [Fact]
    public void ComposedVectorsAndCodesKeepTheLastSegmentsBoundaries()
    {
        PartitionCodes Codes(int[] ids, float top) => new()
        {
            Id = 3, Count = ids.Length, GlobalDimensions = 1, CodedDimensions = 1, Mean = [0], Rotation = [1], Eigenvalues = [1], Widths = [1],
            Boundaries = [-top, 0, top], BoundaryOffsets = [0], Signs = ids.Select(i => (ulong)(i & 1)).ToArray(), SignWords = 1,
            Cells = ids.Select(i => (byte)(i & 1)).ToArray(), ResidualNorms = ids.Select(i => (float)i).ToArray(), Ids = ids,
        };
        var rows = new[] { (0, 1), (1, 0) };
        var codes = PartitionComposition.Codes([Codes([10, 11], 1), Codes([12], 2)], rows, 99);
        Assert.Equal([11, 12], codes.Ids);
        Assert.Equal([11f, 12f], codes.ResidualNorms);
        Assert.Equal([1UL, 0UL], codes.Signs);
        Assert.Equal([-2f, 0, 2f], codes.Boundaries);
        var vectors = PartitionComposition.Vectors(
            [new PartitionVectors { Count = 2, Dimensions = 2, Data = [1, 2, 3, 4] }, new PartitionVectors { Count = 1, Dimensions = 2, Data = [5, 6] }], rows, 99);
        Assert.Equal([3f, 4, 5, 6], vectors.Data);
    }
}
