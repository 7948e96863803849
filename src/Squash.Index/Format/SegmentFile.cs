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
    /// <summary>Build-internal, never part of an index: one source chunk's rows of one partition (ids and internal-space vectors).</summary>
    BuildRun = 5,
    /// <summary>A partition's deletion mask: one bit per stored row (base rows, then appended rows), set when the row is gone.</summary>
    DeletionMask = 6,
}

/// <summary>Thrown when a segment or manifest fails validation; the message names the file.</summary>
public sealed class CorruptIndexException(string message) : Exception(message);

/// <summary>
/// The binary container of every segment:
/// <code>
/// header (64 bytes, little-endian)
///   0  magic "SQSHSEG1"          8  format version u32     12 kind u32
///   16 rows u64                 24 columns u32            28 section count u32
///   32 payload length u64       40 payload XxHash3 u64    48 head length u32
///   52 head XxHash3 u64         60 header CRC-32 of bytes 0..59
/// table of contents: per section (id u32, reserved u32, offset u64, length u64), offsets from file start
/// sections, each aligned to 64 bytes so that they can be used in place (SIMD loads, ranged reads)
/// </code>
/// The payload hash covers everything after the header, so a flipped byte anywhere is detected when the
/// segment is read whole. Version 2 adds the <b>head</b>: the header, the table of contents and the first
/// few sections (small metadata such as a table of block checksums), with its own hash, so that a reader
/// can fetch the head by one ranged read, trust it, and then read (and verify) parts of the big sections
/// that follow. A head length of 0 means the segment is only ever read whole.
/// </summary>
public static class SegmentFile
{
    public const int HeaderSize = 64;
    /// <summary>2: head length and head hash in the header; raw-vector segments carry per-block checksums. Version 1 indexes must be rebuilt.</summary>
    public const uint FormatVersion = 2;
    private const int Alignment = 64;
    private static ReadOnlySpan<byte> Magic => "SQSHSEG1"u8;

    /// <summary>
    /// Lays out the sections and returns the whole segment. The first <paramref name="headSections"/> sections
    /// belong to the head (see the type's summary); 0 makes a segment that is read whole only.
    /// </summary>
    public static byte[] Write(SegmentKind kind, long rows, int columns, IReadOnlyList<(uint Id, ReadOnlyMemory<byte> Data)> sections, int headSections = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(headSections);
        if (headSections > 0 && headSections >= sections.Count) throw new ArgumentOutOfRangeException(nameof(headSections), "the head must leave at least one section outside it");
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
        if (headSections > 0)
        {
            long head = offsets[headSections];
            BinaryPrimitives.WriteInt32LittleEndian(span[48..], checked((int)head));
            BinaryPrimitives.WriteUInt64LittleEndian(span[52..], XxHash3.HashToUInt64(span[HeaderSize..(int)head]));
        }
        BinaryPrimitives.WriteUInt32LittleEndian(span[60..], Crc32.HashToUInt32(span[..60]));
        return file;
    }

    /// <summary>Validates header, hash and table of contents; <paramref name="name"/> is used in errors.</summary>
    public static SegmentView Open(byte[] file, string name, SegmentKind expectedKind)
    {
        var span = file.AsSpan();
        long total = CheckHeader(span, name, expectedKind);
        if (total != span.Length)
            throw new CorruptIndexException($"segment '{name}' is truncated or padded: header says {total} bytes, file has {span.Length}");
        if (BinaryPrimitives.ReadUInt64LittleEndian(span[40..]) != XxHash3.HashToUInt64(span[HeaderSize..]))
            throw new CorruptIndexException($"segment '{name}' failed its checksum: the file is corrupt");
        return new SegmentView(file, name, expectedKind, BinaryPrimitives.ReadInt64LittleEndian(span[16..]), BinaryPrimitives.ReadInt32LittleEndian(span[24..]),
            ReadSections(span, name, total), total);
    }

    /// <summary>
    /// Validates a segment's head read on its own (the first <see cref="HeadLength"/> bytes, or more): header,
    /// head hash and table of contents. Sections inside the head can be read from the view; the others are
    /// only located (<see cref="SegmentView.SectionRange"/>) for ranged reads whose data the caller verifies.
    /// </summary>
    public static SegmentView OpenHead(byte[] head, string name, SegmentKind expectedKind)
    {
        var span = head.AsSpan();
        long total = CheckHeader(span, name, expectedKind);
        int headLength = HeadLength(span);
        if (headLength == 0) throw new CorruptIndexException($"segment '{name}' has no head for ranged reads (it is read whole)");
        if (headLength < HeaderSize || headLength > total) throw new CorruptIndexException($"segment '{name}' has a head length of {headLength} bytes outside the file");
        if (span.Length < headLength) throw new CorruptIndexException($"segment '{name}': {span.Length} bytes read where its head has {headLength}");
        if (BinaryPrimitives.ReadUInt64LittleEndian(span[52..]) != XxHash3.HashToUInt64(span[HeaderSize..headLength]))
            throw new CorruptIndexException($"segment '{name}' failed its head checksum: the file is corrupt");
        var sections = ReadSections(span[..headLength], name, total);
        return new SegmentView(head[..headLength], name, expectedKind, BinaryPrimitives.ReadInt64LittleEndian(span[16..]), BinaryPrimitives.ReadInt32LittleEndian(span[24..]), sections, total);
    }

    /// <summary>The head length a header announces (0: none). Only meaningful after <see cref="OpenHead"/> or <see cref="Open"/> accepted it.</summary>
    public static int HeadLength(ReadOnlySpan<byte> header) => header.Length < HeaderSize ? 0 : BinaryPrimitives.ReadInt32LittleEndian(header[48..]);

    /// <summary>Checks magic, header CRC, version and kind; returns the segment's total length.</summary>
    private static long CheckHeader(ReadOnlySpan<byte> span, string name, SegmentKind expectedKind)
    {
        if (span.Length < HeaderSize) throw new CorruptIndexException($"segment '{name}' is truncated: {span.Length} bytes, less than its {HeaderSize}-byte header");
        if (!span[..8].SequenceEqual(Magic)) throw new CorruptIndexException($"segment '{name}' is not a Squash segment (bad magic)");
        if (BinaryPrimitives.ReadUInt32LittleEndian(span[60..]) != Crc32.HashToUInt32(span[..60]))
            throw new CorruptIndexException($"segment '{name}' has a corrupt header (CRC mismatch)");
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(span[8..]);
        if (version != FormatVersion)
            throw new CorruptIndexException($"segment '{name}' has format version {version}; this build reads version {FormatVersion} (rebuild the index)");
        var kind = (SegmentKind)BinaryPrimitives.ReadUInt32LittleEndian(span[12..]);
        if (kind != expectedKind) throw new CorruptIndexException($"segment '{name}' holds {kind} data where {expectedKind} was expected");
        long payload = BinaryPrimitives.ReadInt64LittleEndian(span[32..]);
        if (payload < 0) throw new CorruptIndexException($"segment '{name}' has a negative payload length");
        return payload + HeaderSize;
    }

    /// <summary>The table of contents, which must lie inside <paramref name="span"/>; sections must lie inside the file's <paramref name="total"/> length.</summary>
    private static Dictionary<uint, (long Offset, long Length)> ReadSections(ReadOnlySpan<byte> span, string name, long total)
    {
        int count = BinaryPrimitives.ReadInt32LittleEndian(span[28..]);
        if (count < 0 || HeaderSize + (long)count * 24 > span.Length) throw new CorruptIndexException($"segment '{name}' has a bad section table");
        var sections = new Dictionary<uint, (long Offset, long Length)>();
        for (int i = 0; i < count; i++)
        {
            var toc = span.Slice(HeaderSize + i * 24, 24);
            uint id = BinaryPrimitives.ReadUInt32LittleEndian(toc);
            long off = BinaryPrimitives.ReadInt64LittleEndian(toc[8..]);
            long len = BinaryPrimitives.ReadInt64LittleEndian(toc[16..]);
            if (off < HeaderSize || len < 0 || off + len > total) throw new CorruptIndexException($"segment '{name}' section {id} lies outside the file");
            sections[id] = (off, len);
        }
        return sections;
    }

    /// <summary>
    /// The head length <see cref="Write"/> produces for <paramref name="sectionCount"/> sections whose first ones
    /// have the given lengths: lets a ranged reader fetch header and head in one request.
    /// </summary>
    public static int HeadLengthFor(int sectionCount, params ReadOnlySpan<long> headSectionLengths)
    {
        long offset = Align(HeaderSize + sectionCount * 24L);
        foreach (long length in headSectionLengths) offset = Align(offset + length);
        return checked((int)offset);
    }

    private static long Align(long v) => (v + Alignment - 1) / Alignment * Alignment;

    /// <summary>Section payload helpers: typed arrays as little-endian bytes (this code runs on little-endian hosts only).</summary>
    /// <remarks>
    /// A view, not a copy: <see cref="Write"/> copies each section into the file once, and a copy here first doubled the bytes
    /// an ingest run allocates and moves for its segments (bench/writes.md). The view reads <paramref name="values"/> as they
    /// are when it is read: callers pass it straight to <see cref="Write"/>.
    /// </remarks>
    public static ReadOnlyMemory<byte> Bytes<T>(T[] values) where T : unmanaged =>
        values is byte[] bytes ? bytes : new ArrayBytes<T>(values).Memory;

    /// <summary>A typed array's memory as bytes (<see cref="Bytes{T}"/>).</summary>
    private sealed class ArrayBytes<T>(T[] values) : System.Buffers.MemoryManager<byte> where T : unmanaged
    {
        public override Span<byte> GetSpan() => MemoryMarshal.AsBytes(values.AsSpan());

        public override unsafe System.Buffers.MemoryHandle Pin(int elementIndex = 0)
        {
            var handle = GCHandle.Alloc(values, GCHandleType.Pinned);
            return new System.Buffers.MemoryHandle((byte*)handle.AddrOfPinnedObject() + elementIndex, handle, this);
        }

        public override void Unpin() { }

        protected override void Dispose(bool disposing) { }
    }

    public static ReadOnlyMemory<byte> Utf8(string s) => Encoding.UTF8.GetBytes(s);
}

/// <summary>A validated segment: typed access to its sections.</summary>
public sealed class SegmentView
{
    private readonly byte[] _file;
    private readonly Dictionary<uint, (long Offset, long Length)> _sections;

    internal SegmentView(byte[] file, string name, SegmentKind kind, long rows, int columns, Dictionary<uint, (long, long)> sections, long totalLength)
    {
        _file = file;
        Name = name;
        Kind = kind;
        Rows = rows;
        Columns = columns;
        _sections = sections;
        TotalLength = totalLength;
    }

    /// <summary>Length of the whole segment (for a head view, more than the bytes it holds).</summary>
    public long TotalLength { get; }

    public string Name { get; }
    public SegmentKind Kind { get; }
    public long Rows { get; }
    public int Columns { get; }

    public bool HasSection(uint id) => _sections.ContainsKey(id);

    public ReadOnlySpan<byte> Section(uint id)
    {
        if (!_sections.TryGetValue(id, out var s)) throw new CorruptIndexException($"segment '{Name}' lacks section {id}");
        if (s.Offset + s.Length > _file.Length) throw new InvalidOperationException($"section {id} of segment '{Name}' lies outside the head that was read");
        return _file.AsSpan((int)s.Offset, (int)s.Length);
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

    public (long Offset, long Length) SectionRange(uint id) =>
        _sections.TryGetValue(id, out var s) ? s : throw new CorruptIndexException($"segment '{Name}' lacks section {id}");
}
