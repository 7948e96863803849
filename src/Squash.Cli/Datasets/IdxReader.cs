using Squash.Core.Vectors;
using System.Buffers.Binary;
using System.IO.Compression;
using System.Numerics.Tensors;

namespace Squash.Cli.Datasets;

/// <summary>
/// Reads gzip-compressed IDX files (the MNIST / Fashion-MNIST distribution format): a big-endian header
/// (magic 0x00000803 for images with count, rows, cols; 0x00000801 for labels with count) followed by
/// unsigned bytes. Header, length and trailing data are all checked so a truncated download is caught.
/// </summary>
public static class IdxReader
{
    public const int ImagesMagic = 0x0000_0803;
    public const int LabelsMagic = 0x0000_0801;

    private const int ChunkBytes = 1 << 20;

    /// <summary>Images as vectors of pixel values 0..255, one row per image, Dimensions = rows × cols.</summary>
    public static VectorSet ReadImages(string gzPath)
    {
        ArgumentNullException.ThrowIfNull(gzPath);
        using var gz = OpenGzip(gzPath);
        Span<byte> header = stackalloc byte[16];
        ReadHeader(gz, header, gzPath, ImagesMagic, "image");
        int count = BinaryPrimitives.ReadInt32BigEndian(header[4..]);
        int rows = BinaryPrimitives.ReadInt32BigEndian(header[8..]);
        int cols = BinaryPrimitives.ReadInt32BigEndian(header[12..]);
        RequireCount(gzPath, count, "images");
        if (rows <= 0 || cols <= 0)
        {
            throw VectorFile.Bad(gzPath, $"invalid image size {rows} x {cols} in IDX header");
        }

        long dims = (long)rows * cols;
        VectorFile.RequireDimensions(gzPath, dims, $"images of {rows} x {cols} pixels have");
        long total = count * dims;
        if (total > Array.MaxLength)
        {
            throw VectorFile.Bad(gzPath, $"too large: {count} images of {dims} pixels exceed one array");
        }

        float[] pixels = new float[total];
        byte[] buffer = new byte[ChunkBytes];
        long done = 0;
        while (done < total)
        {
            int want = (int)Math.Min(buffer.Length, total - done);
            int got = Fill(gz, buffer.AsSpan(0, want), gzPath);
            if (got < want)
            {
                long have = done + got;
                throw VectorFile.Bad(
                    gzPath,
                    $"truncated: header declares {count} images ({total} pixel bytes) but data ends inside image {have / dims}");
            }

            TensorPrimitives.ConvertChecked<byte, float>(buffer.AsSpan(0, want), pixels.AsSpan((int)done, want));
            done += want;
        }

        RequireEnd(gz, gzPath, $"{count} images");
        return new VectorSet(pixels, count, (int)dims);
    }

    public static byte[] ReadLabels(string gzPath)
    {
        ArgumentNullException.ThrowIfNull(gzPath);
        using var gz = OpenGzip(gzPath);
        Span<byte> header = stackalloc byte[8];
        ReadHeader(gz, header, gzPath, LabelsMagic, "label");
        int count = BinaryPrimitives.ReadInt32BigEndian(header[4..]);
        RequireCount(gzPath, count, "labels");
        byte[] labels = new byte[count];
        int got = Fill(gz, labels, gzPath);
        if (got < count)
        {
            throw VectorFile.Bad(gzPath, $"truncated: header declares {count} labels but only {got} are present");
        }

        RequireEnd(gz, gzPath, $"{count} labels");
        return labels;
    }

    private static GZipStream OpenGzip(string path)
    {
        var file = VectorFile.OpenRead(path);
        if (file.Length == 0)
        {
            file.Dispose();
            throw VectorFile.Bad(path, "empty file");
        }

        return new GZipStream(file, CompressionMode.Decompress, leaveOpen: false);
    }

    private static void ReadHeader(Stream gz, Span<byte> header, string path, int expectedMagic, string kind)
    {
        // Magic first: a labels file passed as images should say so, not claim a short header.
        int got = Fill(gz, header[..4], path);
        if (got == 4)
        {
            int magic = BinaryPrimitives.ReadInt32BigEndian(header);
            if (magic != expectedMagic)
            {
                throw VectorFile.Bad(path, $"bad IDX magic number 0x{magic:X8}, expected 0x{expectedMagic:X8} (IDX {kind} file)");
            }

            got += Fill(gz, header[4..], path);
        }

        if (got < header.Length)
        {
            throw VectorFile.Bad(path, $"truncated IDX {kind} header: {got} of {header.Length} bytes");
        }
    }

    private static void RequireCount(string path, int count, string what)
    {
        if (count <= 0)
        {
            throw VectorFile.Bad(path, $"IDX header declares {count} {what}; expected at least one (empty data set)");
        }
    }

    private static void RequireEnd(Stream gz, string path, string what)
    {
        Span<byte> probe = stackalloc byte[1];
        if (Fill(gz, probe, path) != 0)
        {
            throw VectorFile.Bad(path, $"unexpected data after the {what} declared in the IDX header");
        }
    }

    /// <summary>Reads until the span is full or the stream ends; gzip corruption is reported against the file.</summary>
    private static int Fill(Stream gz, Span<byte> destination, string path)
    {
        try
        {
            return gz.ReadAtLeast(destination, destination.Length, throwOnEndOfStream: false);
        }
        catch (InvalidDataException e)
        {
            throw VectorFile.Bad(path, $"corrupt or not gzip-compressed ({e.Message})");
        }
    }
}
