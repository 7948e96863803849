using Squash.Core.Vectors;
using Squash.Index.Build.Sources;
using System.Buffers.Binary;
using System.Globalization;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Text;

namespace Squash.Cli.Datasets;

/// <summary>
/// NumPy .npy support (format versions 1, 2 and 3): a magic string, a version, a header length and a
/// Python-dict header such as <c>{'descr': '&lt;f4', 'fortran_order': False, 'shape': (60000, 784), }</c>,
/// followed by the raw array. Only 2-D little-endian C-order float32 / float64 / uint8 arrays are read.
/// </summary>
internal static class NpyReader
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

        // The header is checked by the same code that reads .npy blobs for queue builds; the CLI then reads the data.
        var start = new byte[(int)Math.Min(length, 12 + MaxHeaderBytes)];
        fs.ReadExactly(start);
        var layout = VectorSourceFormat.ReadLayout(path, start, length);
        fs.Position = layout.DataOffset;
        long rows = layout.Rows, dims = layout.Dimensions, rowBytes = layout.RowBytes;
        int itemSize = layout.ElementBytes;

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
}
