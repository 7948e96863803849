using System.Buffers.Binary;
using System.IO.Compression;
using Squash.Cli.Datasets;

namespace Squash.Cli.Tests.Datasets;

public sealed class IdxReaderTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Images_are_read_as_pixel_floats_row_per_image()
    {
        byte[] pixels = [0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255];
        string path = WriteGz("img.gz", Header(0x803, 2, 2, 3), pixels);

        var v = IdxReader.ReadImages(path);
        Assert.Equal((2, 6), (v.Count, v.Dimensions));
        Assert.Equal(pixels.Select(p => (float)p), v.Data);
    }

    [Fact]
    public void Labels_are_read_as_bytes()
    {
        string path = WriteGz("lab.gz", Header(0x801, 4), [9, 0, 3, 7]);
        Assert.Equal([9, 0, 3, 7], IdxReader.ReadLabels(path));
    }

    [Fact]
    public void Images_larger_than_one_read_chunk_are_complete()
    {
        // 3,000 images of 28 x 28 cross several 1 MiB chunks.
        var pixels = new byte[3000 * 784];
        new Random(4).NextBytes(pixels);
        string path = WriteGz("big.gz", Header(0x803, 3000, 28, 28), pixels);
        var v = IdxReader.ReadImages(path);
        Assert.Equal((3000, 784), (v.Count, v.Dimensions));
        Assert.Equal(pixels[^1], v.Data[^1]);
        // SequenceEqual: xunit's element-by-element collection diff is very slow on millions of items.
        Assert.True(pixels.Select(p => (float)p).ToArray().AsSpan().SequenceEqual(v.Data));
    }

    [Fact]
    public void Label_file_passed_as_images_reports_magic()
    {
        string path = WriteGz("lab.gz", Header(0x801, 4), [1, 2, 3, 4]);
        var e = Assert.Throws<InvalidDataException>(() => IdxReader.ReadImages(path));
        Assert.Contains("magic number 0x00000801, expected 0x00000803", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Image_file_passed_as_labels_reports_magic()
    {
        string path = WriteGz("img.gz", Header(0x803, 1, 1, 1), [1]);
        var e = Assert.Throws<InvalidDataException>(() => IdxReader.ReadLabels(path));
        Assert.Contains("expected 0x00000801", e.Message);
    }

    [Fact]
    public void Truncated_images_name_the_image()
    {
        string path = WriteGz("img.gz", Header(0x803, 3, 2, 2), new byte[10]);
        var e = Assert.Throws<InvalidDataException>(() => IdxReader.ReadImages(path));
        Assert.Contains("truncated", e.Message);
        Assert.Contains("inside image 2", e.Message);
    }

    [Fact]
    public void Truncated_labels_are_reported()
    {
        string path = WriteGz("lab.gz", Header(0x801, 5), [1, 2]);
        var e = Assert.Throws<InvalidDataException>(() => IdxReader.ReadLabels(path));
        Assert.Contains("declares 5 labels but only 2", e.Message);
    }

    [Fact]
    public void Trailing_data_is_reported()
    {
        string path = WriteGz("lab.gz", Header(0x801, 2), [1, 2, 3]);
        var e = Assert.Throws<InvalidDataException>(() => IdxReader.ReadLabels(path));
        Assert.Contains("unexpected data after", e.Message);
    }

    [Fact]
    public void Short_header_is_reported()
    {
        string path = WriteGz("img.gz", [0, 0, 8, 3, 0, 0]);
        var e = Assert.Throws<InvalidDataException>(() => IdxReader.ReadImages(path));
        Assert.Contains("truncated IDX image header", e.Message);
    }

    [Fact]
    public void Zero_sized_images_are_reported()
    {
        string path = WriteGz("img.gz", Header(0x803, 2, 0, 28));
        var e = Assert.Throws<InvalidDataException>(() => IdxReader.ReadImages(path));
        Assert.Contains("invalid image size 0 x 28", e.Message);
    }

    [Fact]
    public void Uncompressed_input_is_reported_as_not_gzip()
    {
        string path = _dir.File("raw.idx");
        File.WriteAllBytes(path, TestData.Concat(Header(0x801, 2), [1, 2]));
        var e = Assert.Throws<InvalidDataException>(() => IdxReader.ReadLabels(path));
        Assert.Contains("gzip", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Empty_file_is_reported()
    {
        string path = _dir.File("empty.gz");
        File.WriteAllBytes(path, []);
        var e = Assert.Throws<InvalidDataException>(() => IdxReader.ReadImages(path));
        Assert.Contains("empty file", e.Message);
    }

    private static byte[] Header(int magic, params int[] sizes)
    {
        var header = new byte[4 * (1 + sizes.Length)];
        BinaryPrimitives.WriteInt32BigEndian(header, magic);
        for (int i = 0; i < sizes.Length; i++)
        {
            BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4 * (i + 1)), sizes[i]);
        }

        return header;
    }

    private string WriteGz(string name, params byte[][] parts)
    {
        string path = _dir.File(name);
        using var file = File.Create(path);
        using var gz = new GZipStream(file, CompressionLevel.Fastest);
        foreach (byte[] part in parts)
        {
            gz.Write(part);
        }

        return path;
    }
}
