using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using System.Text;

namespace Squash.Index.Format;

/// <summary>What a segment holds; stored in its header so a misplaced file is caught.</summary>
public enum SegmentKind : uint
{
    /// <summary>Index-wide routing data: the global KLT, partition centroids and radii.</summary>
    Routing = 1,
    /// <summary>One partition's encoder, sign codes, OSQ bit planes, residual norms and ids.</summary>
    Codes = 2,
    /// <summary>One partition's raw vectors (internal metric space) for exact re-ranking.</summary>
    Vectors = 3,
    /// <summary>One partition's attribute codes, raw values for the exact filter recheck, and string ids.</summary>
    Attributes = 4,
}

/// <summary>Thrown when a segment or manifest fails validation; the message names the file.</summary>
public sealed class CorruptIndexException(string message) : Exception(message);

/// <summary>
/// The binary container of every segment:
/// <code>
/// header (64 bytes, little-endian)
///   0  magic "SQSHSEG1"          8  format version u32     12 kind u32
///   16 rows u64                 24 columns u32            28 section count u32
///   32 payload length u64       40 payload XxHash3 u64    48 reserved (12 bytes)
///   60 header CRC-32 of bytes 0..59
/// table of contents: per section (id u32, reserved u32, offset u64, length u64), offsets from file start
/// sections, each aligned to 64 bytes so that they can be used in place (SIMD loads, ranged reads)
/// </code>
/// The payload hash covers everything after the header, so a flipped byte anywhere is detected.
/// </summary>
public static class SegmentFile
{
    public const int HeaderSize = 64;
    public const uint FormatVersion = 1;
    private const int Alignment = 64;
    private static ReadOnlySpan<byte> Magic => "SQSHSEG1"u8;

    /// <summary>Lays out the sections and returns the whole segment.</summary>
    public static byte[] Write(SegmentKind kind, long rows, int columns, IReadOnlyList<(uint Id, ReadOnlyMemory<byte> Data)> sections)
    {
        int tocSize = sections.Count * 24;
        long offset = Align(HeaderSize + tocSize);
        var offsets = new long[sections.Count];
        for (int i = 0; i < sections.Count; i++)
        {
            offsets[i] = offset;
            offset = Align(offset + sections[i].Data.Length);
        }
        var file = new byte[offset];
        var span = file.AsSpan();
        for (int i = 0; i < sections.Count; i++)
        {
            var toc = span.Slice(HeaderSize + i * 24, 24);
            BinaryPrimitives.WriteUInt32LittleEndian(toc, sections[i].Id);
            BinaryPrimitives.WriteInt64LittleEndian(toc[8..], offsets[i]);
            BinaryPrimitives.WriteInt64LittleEndian(toc[16..], sections[i].Data.Length);
            sections[i].Data.Span.CopyTo(span[(int)offsets[i]..]);
        }
        Magic.CopyTo(span);
        BinaryPrimitives.WriteUInt32LittleEndian(span[8..], FormatVersion);
        BinaryPrimitives.WriteUInt32LittleEndian(span[12..], (uint)kind);
        BinaryPrimitives.WriteInt64LittleEndian(span[16..], rows);
        BinaryPrimitives.WriteInt32LittleEndian(span[24..], columns);
        BinaryPrimitives.WriteInt32LittleEndian(span[28..], sections.Count);
        BinaryPrimitives.WriteInt64LittleEndian(span[32..], file.Length - HeaderSize);
        BinaryPrimitives.WriteUInt64LittleEndian(span[40..], XxHash3.HashToUInt64(span[HeaderSize..]));
        BinaryPrimitives.WriteUInt32LittleEndian(span[60..], Crc32.HashToUInt32(span[..60]));
        return file;
    }

    /// <summary>Validates header, hash and table of contents; <paramref name="name"/> is used in errors.</summary>
    public static SegmentView Open(byte[] file, string name, SegmentKind expectedKind)
    {
        var span = file.AsSpan();
        if (span.Length < HeaderSize) throw new CorruptIndexException($"segment '{name}' is truncated: {span.Length} bytes, less than its {HeaderSize}-byte header");
        if (!span[..8].SequenceEqual(Magic)) throw new CorruptIndexException($"segment '{name}' is not a Squash segment (bad magic)");
        if (BinaryPrimitives.ReadUInt32LittleEndian(span[60..]) != Crc32.HashToUInt32(span[..60]))
            throw new CorruptIndexException($"segment '{name}' has a corrupt header (CRC mismatch)");
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(span[8..]);
        if (version != FormatVersion) throw new CorruptIndexException($"segment '{name}' has format version {version}; this build reads version {FormatVersion}");
        var kind = (SegmentKind)BinaryPrimitives.ReadUInt32LittleEndian(span[12..]);
        if (kind != expectedKind) throw new CorruptIndexException($"segment '{name}' holds {kind} data where {expectedKind} was expected");
        long payload = BinaryPrimitives.ReadInt64LittleEndian(span[32..]);
        if (payload != span.Length - HeaderSize)
            throw new CorruptIndexException($"segment '{name}' is truncated or padded: header says {payload + HeaderSize} bytes, file has {span.Length}");
        if (BinaryPrimitives.ReadUInt64LittleEndian(span[40..]) != XxHash3.HashToUInt64(span[HeaderSize..]))
            throw new CorruptIndexException($"segment '{name}' failed its checksum: the file is corrupt");
        int count = BinaryPrimitives.ReadInt32LittleEndian(span[28..]);
        if (count < 0 || HeaderSize + (long)count * 24 > span.Length) throw new CorruptIndexException($"segment '{name}' has a bad section table");
        var sections = new Dictionary<uint, (int Offset, int Length)>();
        for (int i = 0; i < count; i++)
        {
            var toc = span.Slice(HeaderSize + i * 24, 24);
            uint id = BinaryPrimitives.ReadUInt32LittleEndian(toc);
            long off = BinaryPrimitives.ReadInt64LittleEndian(toc[8..]);
            long len = BinaryPrimitives.ReadInt64LittleEndian(toc[16..]);
            if (off < HeaderSize || len < 0 || off + len > span.Length) throw new CorruptIndexException($"segment '{name}' section {id} lies outside the file");
            sections[id] = ((int)off, (int)len);
        }
        return new SegmentView(file, name, kind, BinaryPrimitives.ReadInt64LittleEndian(span[16..]), BinaryPrimitives.ReadInt32LittleEndian(span[24..]), sections);
    }

    private static long Align(long v) => (v + Alignment - 1) / Alignment * Alignment;

    /// <summary>Section payload helpers: typed arrays as little-endian bytes (this code runs on little-endian hosts only).</summary>
    public static ReadOnlyMemory<byte> Bytes<T>(T[] values) where T : unmanaged => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    public static ReadOnlyMemory<byte> Utf8(string s) => Encoding.UTF8.GetBytes(s);
}

/// <summary>A validated segment: typed access to its sections.</summary>
public sealed class SegmentView
{
    private readonly byte[] _file;
    private readonly Dictionary<uint, (int Offset, int Length)> _sections;

    internal SegmentView(byte[] file, string name, SegmentKind kind, long rows, int columns, Dictionary<uint, (int, int)> sections)
    {
        _file = file;
        Name = name;
        Kind = kind;
        Rows = rows;
        Columns = columns;
        _sections = sections;
    }

    public string Name { get; }
    public SegmentKind Kind { get; }
    public long Rows { get; }
    public int Columns { get; }

    public ReadOnlySpan<byte> Section(uint id)
    {
        if (!_sections.TryGetValue(id, out var s)) throw new CorruptIndexException($"segment '{Name}' lacks section {id}");
        return _file.AsSpan(s.Offset, s.Length);
    }

    /// <summary>Copies a section into a typed array, checking that its length is exactly <paramref name="count"/> items.</summary>
    public T[] Array<T>(uint id, long count) where T : unmanaged
    {
        var bytes = Section(id);
        int size = System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        if (bytes.Length != count * size)
            throw new CorruptIndexException($"segment '{Name}' section {id} holds {bytes.Length} bytes where {count * size} were expected");
        return MemoryMarshal.Cast<byte, T>(bytes).ToArray();
    }

    public (int Offset, int Length) SectionRange(uint id) =>
        _sections.TryGetValue(id, out var s) ? s : throw new CorruptIndexException($"segment '{Name}' lacks section {id}");
}
