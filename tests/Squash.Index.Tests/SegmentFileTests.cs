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

    /// <summary>
    /// <see cref="SegmentFile.Bytes{T}"/> is a view of the array, not a copy: it must still hold exactly the array's bytes
    /// (little-endian, every element, nothing past them), pin to the right address, and give a file byte for byte the one a
    /// copied section gives.
    /// </summary>
    [Fact]
    public void TypedSectionsAreTheArraysBytesAndWriteAsCopiesDo()
    {
        var floats = new float[] { 1.5f, -2, float.Epsilon, 3e30f, 0, -0f, 7 };
        var longs = new ulong[] { 1, ulong.MaxValue, 0x0102030405060708 };
        var ints = new int[] { -1, 2, int.MinValue };
        var expected = System.Runtime.InteropServices.MemoryMarshal.AsBytes(floats.AsSpan()).ToArray();
        var view = SegmentFile.Bytes(floats);
        Assert.Equal(expected, view.ToArray());
        Assert.Equal(new byte[] { 0, 0, 0xC0, 0x3F }, view.Span[..4].ToArray()); // 1.5f, little-endian
        unsafe
        {
            using var pin = view[4..].Pin();
            Assert.Equal(-2f, *(float*)pin.Pointer);
        }
        var bytes = new byte[] { 4, 5, 6 };
        Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetArray(SegmentFile.Bytes(bytes), out var same) && same.Array == bytes);
        Assert.Empty(SegmentFile.Bytes(Array.Empty<double>()).ToArray());

        byte[] Copy<T>(T[] a) where T : unmanaged => System.Runtime.InteropServices.MemoryMarshal.AsBytes(a.AsSpan()).ToArray();
        var viewed = SegmentFile.Write(SegmentKind.Codes, 3, 2, [(1u, SegmentFile.Bytes(floats)), (2u, SegmentFile.Bytes(longs)), (3u, SegmentFile.Bytes(ints))], headSections: 1);
        var copied = SegmentFile.Write(SegmentKind.Codes, 3, 2, [(1u, Copy(floats)), (2u, Copy(longs)), (3u, Copy(ints))], headSections: 1);
        Assert.Equal(copied, viewed);
        var v = SegmentFile.Open(viewed, "c.seg", SegmentKind.Codes);
        Assert.Equal(longs, v.Array<ulong>(2, longs.Length));
        Assert.Equal(ints, v.Array<int>(3, ints.Length));
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

    [Fact]
    public void ManifestFormatVersionsOneToFourOpenAndEachMustCoverWhatItsPartitionsUse()
    {
        const string Head = """{"format":"squash-index","version":"v1","dimensions":2,"internalDimensions":2,"metric":"l2","count":3,"globalDimensions":1,"build":{"partitions":1,"bitsPerDimension":4,"budgetBits":8,"maxBitsPerDimension":8,"seed":1,"balance":0.1,"kMeansIterations":1},""";
        static string Partition(string codes, string appended) =>
            $$$"""{"id":0,"count":3,"codedDimensions":1,"bitsPerVector":2,"codes":{{{codes}}},"vectors":{"name":"p00000.vectors.seg","bytes":640}{{{appended}}}}""";
        const string Appended = ""","baseCount":2,"appended":[{"count":1,"codes":{"name":"p00000.codes.appended.seg","bytes":512},"vectors":{"name":"p00000.vectors.appended.seg","bytes":256}}]""";
        const string PackedAppended = ""","baseCount":2,"appended":[{"count":1,"codes":{"name":"index.pack","bytes":512,"offset":1024,"version":"v0"},"vectors":{"name":"vectors.pack","bytes":256,"offset":0}}]""";
        const string Plain = """{"name":"p00000.codes.seg","bytes":768}""";
        IndexManifest Parse(int format, string partition, string routing = """{"name":"routing.seg","bytes":640}""") =>
            IndexManifest.Parse(System.Text.Encoding.UTF8.GetBytes(Head + $$"""
                "formatVersion":{{format}},"routing":{{routing}},"partitions":[{{partition}}]}
                """), "m.json");

        Assert.Equal(1, IndexManifest.FormatVersionFor(Parse(1, Partition(Plain, "")).Routing, Parse(1, Partition(Plain, "")).Partitions));
        // Format 2 (appended segments in blobs of their own, as ingest wrote them before packs) still opens.
        var extended = Parse(2, Partition(Plain, Appended));
        Assert.Equal(IndexManifest.ExtendedFormatVersion, IndexManifest.FormatVersionFor(extended.Routing, extended.Partitions));
        Assert.Null(extended.Partitions[0].Appended![0].Codes.Offset);
        var packed = Parse(3, Partition(Plain, PackedAppended), """{"name":"index.pack","bytes":640,"offset":0}""");
        Assert.Equal(1024, packed.Partitions[0].Appended![0].Codes.Offset);
        Assert.Equal(IndexManifest.PackedFormatVersion, IndexManifest.FormatVersionFor(packed.Routing, packed.Partitions));

        Assert.Contains("appended segments or deletion masks", Assert.Throws<CorruptIndexException>(() => Parse(1, Partition(Plain, Appended))).Message);
        Assert.Contains("packed", Assert.Throws<CorruptIndexException>(() => Parse(2, Partition(Plain, PackedAppended))).Message);
        Assert.Contains("packed", Assert.Throws<CorruptIndexException>(() => Parse(1, Partition(Plain, ""), """{"name":"index.pack","bytes":640,"offset":0}""")).Message);
        // Format 4: appended codes that leave the quantizer to the base segment (ingest writes it); 5 is not known.
        Assert.Equal(1024, Parse(4, Partition(Plain, PackedAppended), """{"name":"index.pack","bytes":640,"offset":0}""").Partitions[0].Appended![0].Codes.Offset);
        Assert.Contains("format version 5; this build reads 1 to 4", Assert.Throws<CorruptIndexException>(() => Parse(5, Partition(Plain, ""))).Message);
        Assert.Contains("impossible range", Assert.Throws<CorruptIndexException>(() =>
            Parse(3, Partition("""{"name":"index.pack","bytes":10,"offset":0}""", ""))).Message);
    }
}
