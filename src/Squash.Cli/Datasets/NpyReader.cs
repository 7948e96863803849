using Squash.Core.Vectors;
using System.Buffers.Binary;
using System.Globalization;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;

namespace Squash.Cli.Datasets;

/// <summary>
/// NumPy .npy support (format versions 1, 2 and 3): a magic string, a version, a header length and a
/// Python-dict header such as <c>{'descr': '&lt;f4', 'fortran_order': False, 'shape': (60000, 784), }</c>,
/// followed by the raw array. Only 2-D little-endian C-order float32 / float64 / uint8 arrays are read.
/// </summary>
internal static partial class NpyReader
{
    // 0x93 followed by "NUMPY".
    private static ReadOnlySpan<byte> Magic => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    // Bytes decoded per bulk conversion step (float64 / uint8 need converting, float32 is read in place).
    private const int ChunkBytes = 4 << 20;

    // A real header is a few hundred bytes; anything huge means the length field is garbage.
    private const int MaxHeaderBytes = 1 << 20;

    public static VectorSet Read(string path, int? maxCount)
    {
        using var fs = VectorFile.OpenRead(path);
        long length = fs.Length;
        if (length == 0)
        {
            throw VectorFile.Bad(path, "empty file");
        }

        Span<byte> preamble = stackalloc byte[12];
        if (length < 10)
        {
            throw VectorFile.Bad(path, $"truncated .npy header: file has only {length} bytes");
        }

        fs.ReadExactly(preamble[..10]);
        if (!preamble[..6].SequenceEqual(Magic))
        {
            throw VectorFile.Bad(path, "not a NumPy .npy file (missing \\x93NUMPY magic)");
        }

        byte major = preamble[6];
        int preambleBytes;
        long headerBytes;
        switch (major)
        {
            case 1:
                preambleBytes = 10;
                headerBytes = BinaryPrimitives.ReadUInt16LittleEndian(preamble[8..]);
                break;
            case 2 or 3:
                preambleBytes = 12;
                if (length < 12)
                {
                    throw VectorFile.Bad(path, $"truncated .npy header: file has only {length} bytes");
                }

                fs.ReadExactly(preamble[10..12]);
                headerBytes = BinaryPrimitives.ReadUInt32LittleEndian(preamble[8..]);
                break;
            default:
                throw VectorFile.Bad(path, $"unsupported .npy format version {major}.{preamble[7]} (supported: 1, 2, 3)");
        }

        if (headerBytes > MaxHeaderBytes || preambleBytes + headerBytes > length)
        {
            throw VectorFile.Bad(path, $"truncated .npy header: it declares {headerBytes} header bytes, file has {length} bytes in total");
        }

        byte[] headerRaw = new byte[headerBytes];
        fs.ReadExactly(headerRaw);
        // Version 3 only differs by allowing UTF-8 in the header.
        string header = major == 3 ? Encoding.UTF8.GetString(headerRaw) : Encoding.Latin1.GetString(headerRaw);

        var (descr, fortran, shape) = ParseHeader(path, header);
        if (fortran)
        {
            throw VectorFile.Bad(path, "Fortran-order (column-major) arrays are not supported; save a C-order array (np.ascontiguousarray)");
        }

        int itemSize = descr switch
        {
            "<f4" => sizeof(float),
            "<f8" => sizeof(double),
            "|u1" or "<u1" or "u1" => sizeof(byte),
            _ => throw VectorFile.Bad(path, $"unsupported dtype '{descr}' (supported: '<f4', '<f8', '|u1')"),
        };

        if (shape.Length != 2)
        {
            throw VectorFile.Bad(path, $"expected a 2-D array (rows, dimensions), found shape ({string.Join(", ", shape)})");
        }

        long rows = shape[0];
        long dims = shape[1];
        VectorFile.RequireDimensions(path, dims, "array has");
        if (rows <= 0)
        {
            throw VectorFile.Bad(path, $"empty array: shape ({rows}, {dims}) has no vectors");
        }

        long dataOffset = preambleBytes + headerBytes;
        long rowBytes = dims * itemSize;
        long available = length - dataOffset;
        // Compare row counts, not byte counts: a corrupt shape could overflow rows × rowBytes.
        long completeRows = available / rowBytes;
        if (rows > completeRows)
        {
            throw VectorFile.Bad(path, $"truncated data: row {completeRows} of {rows} is incomplete ({available} data bytes present, {rowBytes} per row)");
        }

        if (available > rows * rowBytes)
        {
            throw VectorFile.Bad(path, $"{available - rows * rowBytes} unexpected bytes after the {rows} x {dims} array");
        }

        long count = maxCount is { } m && m < rows ? m : rows;
        if (count * dims > Array.MaxLength)
        {
            throw VectorFile.Bad(path, $"too large: {count} rows x {dims} values exceed one array; pass a smaller maxCount");
        }

        int d = (int)dims;
        float[] data = new float[count * dims];
        int rowsPerChunk = (int)Math.Max(1, ChunkBytes / rowBytes);
        byte[]? scratch = itemSize == sizeof(float) ? null : new byte[rowsPerChunk * rowBytes];
        for (long first = 0; first < count; first += rowsPerChunk)
        {
            int n = (int)Math.Min(rowsPerChunk, count - first);
            var target = data.AsSpan((int)(first * d), n * d);
            if (scratch is null)
            {
                // float32 little-endian is already the in-memory layout: read straight into the result.
                VectorFile.ReadExactly(fs, MemoryMarshal.AsBytes(target), path, first);
                continue;
            }

            var raw = scratch.AsSpan(0, n * d * itemSize);
            VectorFile.ReadExactly(fs, raw, path, first);
            if (itemSize == sizeof(double))
            {
                // Same as a (float) cast: rounds to nearest, out-of-range values become infinities (rejected below).
                TensorPrimitives.ConvertTruncating<double, float>(MemoryMarshal.Cast<byte, double>(raw), target);
            }
            else
            {
                TensorPrimitives.ConvertChecked<byte, float>(raw, target);
            }
        }

        if (itemSize != sizeof(byte))
        {
            // float64 values beyond float range become infinities here and are reported like any other.
            VectorFile.RequireFinite(path, data, d);
        }

        return new VectorSet(data, (int)count, d);
    }

    /// <summary>Header for a version 1.0 float32 C-order file, padded so the data starts 64-byte aligned.</summary>
    public static byte[] BuildHeader(int rows, int dims)
    {
        string dict = string.Create(
            CultureInfo.InvariantCulture,
            $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dims}), }}");
        int unpadded = 10 + dict.Length + 1; // preamble + dict + trailing newline
        int padding = (64 - unpadded % 64) % 64;
        string text = dict + new string(' ', padding) + "\n";
        byte[] header = new byte[10 + text.Length];
        Magic.CopyTo(header);
        header[6] = 1;
        header[7] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(8), checked((ushort)text.Length));
        Encoding.Latin1.GetBytes(text, header.AsSpan(10));
        return header;
    }

    private static (string Descr, bool Fortran, long[] Shape) ParseHeader(string path, string header)
    {
        var descr = DescrPattern().Match(header);
        var fortran = FortranPattern().Match(header);
        var shape = ShapePattern().Match(header);
        if (!descr.Success || !fortran.Success || !shape.Success)
        {
            throw VectorFile.Bad(path, $"malformed .npy header (needs 'descr', 'fortran_order' and 'shape'): {header.Trim()}");
        }

        var dims = new List<long>();
        foreach (string part in shape.Groups[1].Value.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            // NumPy may write Python longs with an L suffix in old files.
            if (!long.TryParse(part.TrimEnd('L'), NumberStyles.Integer, CultureInfo.InvariantCulture, out long value))
            {
                throw VectorFile.Bad(path, $"malformed .npy shape '({shape.Groups[1].Value})'");
            }

            dims.Add(value);
        }

        return (descr.Groups[1].Value, fortran.Groups[1].Value == "True", dims.ToArray());
    }

    [GeneratedRegex(@"['""]descr['""]\s*:\s*['""]([^'""]*)['""]")]
    private static partial Regex DescrPattern();

    [GeneratedRegex(@"['""]fortran_order['""]\s*:\s*(True|False)")]
    private static partial Regex FortranPattern();

    [GeneratedRegex(@"['""]shape['""]\s*:\s*\(([^)]*)\)")]
    private static partial Regex ShapePattern();
}
