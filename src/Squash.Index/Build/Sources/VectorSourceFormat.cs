using System.Buffers.Binary;
using System.Globalization;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;

namespace Squash.Index.Build.Sources;

/// <summary>Element type of a vector source's stored values.</summary>
public enum SourceElement { Float32, Float64, UInt8 }

/// <summary>
/// The layout of one vector source (a .fvecs, .bvecs or .npy blob), learnt from its first bytes and its length:
/// where row r starts, how many bytes it takes, and how to turn its bytes into float32. Row ranges can then be
/// read with ranged reads, which is how a build task touches only its own chunk of a large source.
/// </summary>
/// <param name="DataOffset">Bytes before row 0 (the .npy header; 0 for *vecs).</param>
/// <param name="RecordPrefix">Bytes before each row's values (the int32 dimension of a *vecs record; 0 for .npy).</param>
public sealed record SourceLayout(string Format, SourceElement Element, long Rows, int Dimensions, long DataOffset, int RecordPrefix)
{
    public int ElementBytes => Element switch { SourceElement.Float64 => 8, SourceElement.UInt8 => 1, _ => 4 };
    public long RowBytes => RecordPrefix + (long)Dimensions * ElementBytes;
    public long OffsetOf(long row) => DataOffset + row * RowBytes;
}

/// <summary>
/// Reads the headers and rows of the vector formats `squash build` takes, from bytes (no I/O, so a local file and
/// a blob are read by the same rules). Every problem is an <see cref="InvalidDataException"/> whose message starts
/// with the source's name and says what is wrong and where (row, column).
/// </summary>
public static partial class VectorSourceFormat
{
    /// <summary>Largest dimension accepted; anything above is far more likely a corrupt header than real data.</summary>
    public const int MaxDimensions = 4096;

    /// <summary>Bytes of a source's start that always hold its whole header (an .npy header is at most this long).</summary>
    public const int HeaderProbeBytes = 1 << 16;

    private static ReadOnlySpan<byte> NpyMagic => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>Bytes of one .fvecs record of <paramref name="dims"/> dimensions: the dimension, then the floats.</summary>
    public static int FvecsRecordBytes(int dims) => 4 + 4 * dims;

    /// <summary>Writes <paramref name="row"/> as one .fvecs record at the start of <paramref name="destination"/> (what <see cref="DecodeRows"/> reads back).</summary>
    public static void WriteFvecsRecord(Span<byte> destination, ReadOnlySpan<float> row)
    {
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(destination, row.Length);
        System.Runtime.InteropServices.MemoryMarshal.AsBytes(row).CopyTo(destination[4..]);
    }

    /// <summary>The format named by a blob or file name's extension, or null when it is none of them.</summary>
    public static string? FormatOf(string name) => Path.GetExtension(name).ToLowerInvariant() switch
    {
        ".fvecs" => "fvecs",
        ".bvecs" => "bvecs",
        ".npy" => "npy",
        _ => null,
    };

    /// <summary>
    /// The layout of a source of <paramref name="length"/> bytes whose first bytes are <paramref name="start"/>
    /// (at least <see cref="HeaderProbeBytes"/> of them, or the whole source when it is shorter).
    /// </summary>
    public static SourceLayout ReadLayout(string name, ReadOnlySpan<byte> start, long length)
    {
        var format = FormatOf(name) ?? throw Bad(name, $"unknown extension '{Path.GetExtension(name)}' (expected .fvecs, .bvecs or .npy)");
        if (length == 0) throw Bad(name, "empty file");
        return format == "npy" ? NpyLayout(name, start, length) : VecsLayout(name, format, start, length);
    }

    private static SourceLayout VecsLayout(string name, string format, ReadOnlySpan<byte> start, long length)
    {
        if (length < 4 || start.Length < 4) throw Bad(name, $"truncated record 0: file has only {length} bytes, not even a dimension header");
        int dims = BinaryPrimitives.ReadInt32LittleEndian(start);
        RequireDimensions(name, dims, "record 0 declares");
        var layout = new SourceLayout(format, format == "fvecs" ? SourceElement.Float32 : SourceElement.UInt8, 0, dims, 0, 4);
        long rows = length / layout.RowBytes, tail = length % layout.RowBytes;
        if (rows == 0) throw Bad(name, $"truncated record 0: expected {layout.RowBytes} bytes for dimension {dims}, file has {length}");
        if (tail != 0) throw Bad(name, $"truncated record {rows}: has {tail} of {layout.RowBytes} bytes");
        return layout with { Rows = rows };
    }

    private static SourceLayout NpyLayout(string name, ReadOnlySpan<byte> start, long length)
    {
        if (length < 10 || start.Length < 10) throw Bad(name, $"truncated .npy header: file has only {length} bytes");
        if (!start[..6].SequenceEqual(NpyMagic)) throw Bad(name, "not a NumPy .npy file (missing \\x93NUMPY magic)");
        byte major = start[6];
        int preamble;
        long headerBytes;
        switch (major)
        {
            case 1:
                preamble = 10;
                headerBytes = BinaryPrimitives.ReadUInt16LittleEndian(start[8..]);
                break;
            case 2 or 3:
                preamble = 12;
                if (start.Length < 12) throw Bad(name, $"truncated .npy header: file has only {length} bytes");
                headerBytes = BinaryPrimitives.ReadUInt32LittleEndian(start[8..]);
                break;
            default:
                throw Bad(name, $"unsupported .npy format version {major}.{start[7]} (supported: 1, 2, 3)");
        }
        if (preamble + headerBytes > Math.Min(length, start.Length))
            throw Bad(name, $"truncated .npy header: it declares {headerBytes} header bytes, file has {length} bytes in total");
        var raw = start.Slice(preamble, (int)headerBytes);
        string header = major == 3 ? Encoding.UTF8.GetString(raw) : Encoding.Latin1.GetString(raw);
        var descr = DescrPattern().Match(header);
        var fortran = FortranPattern().Match(header);
        var shape = ShapePattern().Match(header);
        if (!descr.Success || !fortran.Success || !shape.Success)
            throw Bad(name, $"malformed .npy header (needs 'descr', 'fortran_order' and 'shape'): {header.Trim()}");
        if (fortran.Groups[1].Value == "True")
            throw Bad(name, "Fortran-order (column-major) arrays are not supported; save a C-order array (np.ascontiguousarray)");
        var element = descr.Groups[1].Value switch
        {
            "<f4" => SourceElement.Float32,
            "<f8" => SourceElement.Float64,
            "|u1" or "<u1" or "u1" => SourceElement.UInt8,
            var d => throw Bad(name, $"unsupported dtype '{d}' (supported: '<f4', '<f8', '|u1')"),
        };
        var dims = new List<long>();
        foreach (var part in shape.Groups[1].Value.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (!long.TryParse(part.TrimEnd('L'), NumberStyles.Integer, CultureInfo.InvariantCulture, out long value))
                throw Bad(name, $"malformed .npy shape '({shape.Groups[1].Value})'");
            dims.Add(value);
        }
        if (dims.Count != 2) throw Bad(name, $"expected a 2-D array (rows, dimensions), found shape ({string.Join(", ", dims)})");
        RequireDimensions(name, dims[1], "array has");
        if (dims[0] <= 0) throw Bad(name, $"empty array: shape ({dims[0]}, {dims[1]}) has no vectors");
        var layout = new SourceLayout("npy", element, dims[0], (int)dims[1], preamble + headerBytes, 0);
        long available = length - layout.DataOffset;
        long complete = available / layout.RowBytes;
        if (layout.Rows > complete)
            throw Bad(name, $"truncated data: row {complete} of {layout.Rows} is incomplete ({available} data bytes present, {layout.RowBytes} per row)");
        if (available > layout.Rows * layout.RowBytes)
            throw Bad(name, $"{available - layout.Rows * layout.RowBytes} unexpected bytes after the {layout.Rows} x {layout.Dimensions} array");
        return layout;
    }

    /// <summary>
    /// Decodes <paramref name="count"/> rows starting at row <paramref name="firstRow"/> from their stored bytes
    /// (<c>count × RowBytes</c>, read from <see cref="SourceLayout.OffsetOf"/>) into float32; checks each *vecs
    /// record's dimension and that every value is finite.
    /// </summary>
    public static void DecodeRows(string name, SourceLayout layout, long firstRow, int count, ReadOnlySpan<byte> bytes, Span<float> destination)
    {
        int d = layout.Dimensions;
        long rowBytes = layout.RowBytes;
        if (bytes.Length != count * rowBytes) throw new ArgumentException($"expected {count * rowBytes} bytes for {count} rows, got {bytes.Length}");
        if (destination.Length < count * d) throw new ArgumentException("destination is shorter than count × dimensions");
        for (int r = 0; r < count; r++)
        {
            var record = bytes.Slice((int)(r * rowBytes), (int)rowBytes);
            if (layout.RecordPrefix > 0)
            {
                int found = BinaryPrimitives.ReadInt32LittleEndian(record);
                if (found != d) throw Bad(name, $"mixed dimensions: record {firstRow + r} has dimension {found}, expected {d} (from record 0)");
                record = record[layout.RecordPrefix..];
            }
            var target = destination.Slice(r * d, d);
            switch (layout.Element)
            {
                case SourceElement.Float32: record.CopyTo(MemoryMarshal.AsBytes(target)); break;
                case SourceElement.Float64: TensorPrimitives.ConvertTruncating<double, float>(MemoryMarshal.Cast<byte, double>(record), target); break;
                default: TensorPrimitives.ConvertChecked<byte, float>(record, target); break;
            }
        }
        if (layout.Element != SourceElement.UInt8)
        {
            var values = destination[..(count * d)];
            for (int i = 0; i < values.Length; i++)
                if (!float.IsFinite(values[i]))
                {
                    string kind = float.IsNaN(values[i]) ? "NaN" : "infinite value " + values[i].ToString(CultureInfo.InvariantCulture);
                    throw Bad(name, $"{kind} at row {firstRow + i / d}, column {i % d}");
                }
        }
    }

    private static void RequireDimensions(string name, long dims, string what)
    {
        if (dims <= 0 || dims > MaxDimensions) throw Bad(name, $"{what} dimension {dims}; it must be between 1 and {MaxDimensions}");
    }

    private static InvalidDataException Bad(string name, string problem) => new($"{name}: {problem}");

    [GeneratedRegex(@"['""]descr['""]\s*:\s*['""]([^'""]*)['""]")]
    private static partial Regex DescrPattern();

    [GeneratedRegex(@"['""]fortran_order['""]\s*:\s*(True|False)")]
    private static partial Regex FortranPattern();

    [GeneratedRegex(@"['""]shape['""]\s*:\s*\(([^)]*)\)")]
    private static partial Regex ShapePattern();
}
