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

    [Fact]
    public void AppendedCodesWithoutTheQuantizerComposeWithTheBasesAndABaseWithoutOneIsCorrupt()
    {
        // 3 coded of 4 global dims: the rotation is 12 floats, which the appended segment leaves to the base.
        PartitionCodes Codes(int[] ids, float top) => new()
        {
            Id = 3, Count = ids.Length, GlobalDimensions = 4, CodedDimensions = 3, Mean = [1, 2, 3, 4],
            Rotation = Enumerable.Range(0, 12).Select(i => (float)i).ToArray(), Eigenvalues = [4, 3, 2, 1], Widths = [2, 1, 1],
            Boundaries = [-top, -1, 0, 1, top, -1, 0, 1, -1, 0, 1], BoundaryOffsets = [0, 5, 8], SignWords = 1,
            // A cell's top bit is its sign bit (the segment stores them apart).
            Signs = ids.Select(i => (ulong)((i % 4) >> 1 | (i >> 1 & 1) << 1 | (i >> 2 & 1) << 2)).ToArray(),
            Cells = ids.SelectMany(i => new[] { (byte)(i % 4), (byte)(i >> 1 & 1), (byte)(i >> 2 & 1) }).ToArray(),
            ResidualNorms = ids.Select(i => (float)i).ToArray(), Ids = ids,
        };
        var based = Codes([10, 12], 2);
        var appended = Codes([21, 22, 23], 5);
        var entry = new PartitionEntry { Id = 3, Count = 3, CodedDimensions = 3, BitsPerVector = 4, Codes = new SegmentRef("a", 1), Vectors = new SegmentRef("v", 1) };
        byte[] lean = appended.ToAppendedSegment(), full = appended.ToSegment();
        Assert.True(full.Length - lean.Length >= (4 + 12) * sizeof(float) + 4 * sizeof(double), $"lean {lean.Length} B, full {full.Length} B");

        var read = PartitionCodes.FromSegment(lean, "index.pack[0..9)", entry, 4, appended: true);
        Assert.False(read.HasQuantizer);
        Assert.Empty(read.Rotation);
        Assert.Equal(appended.Cells, read.Cells);
        Assert.Equal(appended.Signs, read.Signs);
        // Only the outer boundaries, lowest and highest per coded dimension: ingest moves no inner one.
        Assert.Empty(read.Boundaries);
        Assert.Equal([-5f, 5, -1, 1, -1, 1], read.OuterBoundaries!);
        Assert.Equal(appended.Ids, read.Ids);
        // A full appended segment (as ingest wrote before format 4) still reads, quantizer and all.
        Assert.True(PartitionCodes.FromSegment(full, "old", entry, 4, appended: true).HasQuantizer);

        // Composed, the rows take the base's quantizer and the last segment's boundaries.
        var codes = PartitionComposition.Codes([based, read], [(0, 1), (1, 0), (1, 2)], 99);
        Assert.Equal([12, 21, 23], codes.Ids);
        Assert.Equal(based.Rotation, codes.Rotation);
        Assert.Equal(based.Mean, codes.Mean);
        Assert.Equal(based.Eigenvalues, codes.Eigenvalues);
        Assert.Equal(appended.Boundaries, codes.Boundaries);
        Assert.Equal(appended.Cells.AsSpan(0, 3).ToArray(), codes.Cells.AsSpan(3, 3).ToArray());

        // A later lean segment's outer boundaries win; the inner ones stay the base's.
        var wider = PartitionCodes.FromSegment(Codes([31], 9).ToAppendedSegment(), "index.pack[9..99)", entry with { Count = 1 }, 4, appended: true);
        var three = PartitionComposition.Codes([based, read, wider], [(0, 0), (1, 1), (2, 0)], 99);
        Assert.Equal([10, 22, 31], three.Ids);
        Assert.Equal([-9f, -1, 0, 1, 9, -1, 0, 1, -1, 0, 1], three.Boundaries);
        Assert.Equal([-2f, -1, 0, 1, 2, -1, 0, 1, -1, 0, 1], based.Boundaries); // not changed in place

        // Read as a base (or whole) segment it is corrupt, named: the quantizer is not somewhere else.
        var error = Assert.Throws<CorruptIndexException>(() => PartitionCodes.FromSegment(lean, "p00003.codes.seg", entry, 4));
        Assert.Contains("segment 'p00003.codes.seg' has no quantizer", error.Message);
    }
}
