using Squash.Index.Format;
using Squash.Index.Model;

namespace Squash.Index.Tests;

public class SegmentFileTests
{
    private static byte[] Sample() => SegmentFile.Write(SegmentKind.Vectors, 3, 2,
    [
        (1u, SegmentFile.Bytes(new float[] { 1, 2, 3, 4, 5, 6 })),
        (7u, new byte[] { 9, 8, 7 }),
    ]);

    [Fact]
    public void RoundTripsSectionsAndHeader()
    {
        var v = SegmentFile.Open(Sample(), "s.seg", SegmentKind.Vectors);
        Assert.Equal(3, v.Rows);
        Assert.Equal(2, v.Columns);
        Assert.Equal(new float[] { 1, 2, 3, 4, 5, 6 }, v.Array<float>(1, 6));
        Assert.Equal(new byte[] { 9, 8, 7 }, v.Section(7).ToArray());
        Assert.Equal(0, v.SectionRange(1).Offset % 64);
    }

    [Fact]
    public void EveryFlippedByteIsDetectedAndTheErrorNamesTheFile()
    {
        var original = Sample();
        for (int i = 0; i < original.Length; i++)
        {
            var copy = (byte[])original.Clone();
            copy[i] ^= 0x10;
            var e = Assert.Throws<CorruptIndexException>(() => SegmentFile.Open(copy, "p00003.codes.seg", SegmentKind.Vectors));
            Assert.Contains("p00003.codes.seg", e.Message);
        }
    }

    [Fact]
    public void AHeadReadOnItsOwnIsVerifiedAndLocatesTheSectionsAfterIt()
    {
        var file = SegmentFile.Write(SegmentKind.Vectors, 3, 2, [(7u, new byte[] { 9, 8, 7 }), (1u, SegmentFile.Bytes(new float[] { 1, 2, 3, 4, 5, 6 }))], headSections: 1);
        int head = SegmentFile.HeadLength(file);
        Assert.Equal(SegmentFile.HeadLengthFor(2, 3), head);
        var v = SegmentFile.OpenHead(file[..head], "h.seg", SegmentKind.Vectors);
        Assert.Equal(new byte[] { 9, 8, 7 }, v.Section(7).ToArray());
        Assert.Equal((head, 24L), v.SectionRange(1));
        Assert.Equal(file.Length, v.TotalLength);
        Assert.Throws<InvalidOperationException>(() => v.Section(1).ToArray());
        for (int i = 0; i < head; i++)
        {
            var copy = file[..head];
            copy[i] ^= 0x20;
            Assert.Contains("h.seg", Assert.Throws<CorruptIndexException>(() => SegmentFile.OpenHead(copy, "h.seg", SegmentKind.Vectors)).Message);
        }
        Assert.Contains("no head", Assert.Throws<CorruptIndexException>(() => SegmentFile.OpenHead(Sample(), "s.seg", SegmentKind.Vectors)).Message);
    }

    [Fact]
    public void TruncatedEmptyAndWrongKindAreRejected()
    {
        var s = Sample();
        Assert.Contains("truncated", Assert.Throws<CorruptIndexException>(() => SegmentFile.Open(s[..^5], "a", SegmentKind.Vectors)).Message);
        Assert.Contains("truncated", Assert.Throws<CorruptIndexException>(() => SegmentFile.Open([], "a", SegmentKind.Vectors)).Message);
        Assert.Contains("Codes data where Vectors", Assert.Throws<CorruptIndexException>(() =>
            SegmentFile.Open(SegmentFile.Write(SegmentKind.Codes, 0, 0, []), "a", SegmentKind.Vectors)).Message);
    }

    [Fact]
    public void ASectionOfTheWrongSizeIsRejected()
    {
        var v = SegmentFile.Open(Sample(), "s.seg", SegmentKind.Vectors);
        Assert.Contains("where 28 were expected", Assert.Throws<CorruptIndexException>(() => v.Array<float>(1, 7)).Message);
        Assert.Contains("lacks section 3", Assert.Throws<CorruptIndexException>(() => v.Section(3).ToArray()).Message);
    }

    [Fact]
    public void ManifestValidationNamesTheProblem()
    {
        Assert.Contains("not valid JSON", Assert.Throws<CorruptIndexException>(() => IndexManifest.Parse("{"u8, "m.json")).Message);
        Assert.Contains("not a Squash index manifest", Assert.Throws<CorruptIndexException>(() => IndexManifest.Parse(
            """{"format":"other","version":"v1","dimensions":2,"internalDimensions":2,"metric":"l2","count":0,"globalDimensions":1,"build":{"partitions":1,"bitsPerDimension":4,"budgetBits":8,"maxBitsPerDimension":8,"seed":1,"balance":0.1,"kMeansIterations":1},"routing":{"name":"r","bytes":1},"partitions":[]}"""u8, "m.json")).Message);
    }
}
