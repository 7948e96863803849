using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using Squash.Index.Format;

namespace Squash.Index.Model;

/// <summary>
/// One partition's raw vectors in the internal metric space, for exact re-ranking. Either dense (every row,
/// read with the whole segment) or sparse (only the checksummed blocks a query fetched by ranged reads).
/// <para>Segment layout (kind Vectors): the head holds the block table — rows per block u32, block count u32,
/// then one XxHash3 u64 per block — and the vector section follows (Count × Dimensions floats, row-major).
/// A block is <see cref="RowsPerBlockFor"/> consecutive rows (the last may be shorter), so that a ranged read
/// of a few rows can be verified without the rest of the segment.</para>
/// </summary>
public sealed class PartitionVectors
{
    private const uint VectorSection = 1, BlockSection = 2;

    /// <summary>
    /// Bytes a block aims at: small, because a re-rank touches a few scattered rows and a whole block must be
    /// read to check one (128-dim rows: 2 per block; 784-dim rows: 1 per block), yet 8 bytes of hash per block
    /// is under 1 % of the segment.
    /// </summary>
    public const int TargetBlockBytes = 1024;

    private readonly float[]? _data;
    private readonly float[]?[]? _blocks;
    /// <summary>A view's source (row-major, <see cref="Dimensions"/> per row) and, per row of the partition, its row there.</summary>
    private readonly float[]? _source;
    private readonly int[]? _sourceRows;

    public required int Count { get; init; }
    public required int Dimensions { get; init; }

    /// <summary>Every row, row-major. Only a dense instance has it: a sparse one throws.</summary>
    public float[] Data
    {
        get => _data ?? throw new InvalidOperationException(_source is not null
            ? "this partition's vectors are a view of other rows; use Row(i)" : "this partition's vectors were fetched by rows (sparse); use Row(i)");
        init => _data = value;
    }

    public long StoredBytes { get; init; }

    /// <summary>Rows per checksummed block in this partition's segment.</summary>
    public int RowsPerBlock { get; init; }

    public bool IsSparse => _data is null && _source is null;

    /// <summary>A sparse view: <paramref name="blocks"/>[b] holds block b's rows, or null when it was not fetched.</summary>
    public static PartitionVectors Sparse(int count, int dimensions, int rowsPerBlock, float[]?[] blocks) =>
        new(blocks) { Count = count, Dimensions = dimensions, RowsPerBlock = rowsPerBlock };

    /// <summary>
    /// Rows of another row-major array, nothing copied: row i is <paramref name="source"/>'s row <paramref name="rows"/>[i]
    /// (a build's calibration reads its input this way instead of the vector segments it has just written).
    /// </summary>
    public static PartitionVectors View(float[] source, int[] rows, int dimensions)
    {
        foreach (int row in rows)
            if (row < 0 || (long)(row + 1) * dimensions > source.LongLength) throw new ArgumentOutOfRangeException(nameof(rows), $"row {row} is outside the source");
        return new(source, rows) { Count = rows.Length, Dimensions = dimensions, RowsPerBlock = RowsPerBlockFor(dimensions) };
    }

    public PartitionVectors() { }

    private PartitionVectors(float[]?[] blocks) => _blocks = blocks;

    private PartitionVectors(float[] source, int[] rows) => (_source, _sourceRows) = (source, rows);

    public static int RowsPerBlockFor(int dimensions) => Math.Max(1, TargetBlockBytes / (dimensions * sizeof(float)));

    public bool HasRow(int i) => _data is not null || _source is not null || _blocks![i / RowsPerBlock] is not null;

    /// <summary>Row i; on a sparse instance a row that was not fetched is an error, never a silent zero.</summary>
    public ReadOnlySpan<float> Row(int i)
    {
        int d = Dimensions;
        if (_data is not null) return _data.AsSpan(i * d, d);
        if (_source is not null) return _source.AsSpan(_sourceRows![i] * d, d);
        var block = _blocks![i / RowsPerBlock] ?? throw new MissingRowException(i);
        return block.AsSpan(i % RowsPerBlock * d, d);
    }

    public byte[] ToSegment()
    {
        int rowsPerBlock = RowsPerBlockFor(Dimensions);
        var raw = MemoryMarshal.AsBytes(Data.AsSpan());
        int rowBytes = Dimensions * sizeof(float);
        int blocks = BlockCount(Count, rowsPerBlock);
        var table = new byte[8 + 8 * blocks];
        BinaryPrimitives.WriteInt32LittleEndian(table, rowsPerBlock);
        BinaryPrimitives.WriteInt32LittleEndian(table.AsSpan(4), blocks);
        for (int b = 0; b < blocks; b++)
        {
            int first = b * rowsPerBlock, rows = Math.Min(rowsPerBlock, Count - first);
            BinaryPrimitives.WriteUInt64LittleEndian(table.AsSpan(8 + 8 * b), XxHash3.HashToUInt64(raw.Slice(first * rowBytes, rows * rowBytes)));
        }
        return SegmentFile.Write(SegmentKind.Vectors, Count, Dimensions, [(BlockSection, table), (VectorSection, SegmentFile.Bytes(Data))], headSections: 1);
    }

    internal static int BlockCount(int count, int rowsPerBlock) => (count + rowsPerBlock - 1) / rowsPerBlock;

    public static PartitionVectors FromSegment(byte[] file, string name, PartitionEntry entry, int dims)
    {
        var v = SegmentFile.Open(file, name, SegmentKind.Vectors);
        if (v.Rows != entry.Count || v.Columns != dims) throw new CorruptIndexException($"segment '{name}' does not match its manifest entry");
        var table = VectorBlockTable.FromView(v, entry, dims);
        return new PartitionVectors
        {
            Count = entry.Count, Dimensions = dims, Data = v.Array<float>(VectorSection, (long)entry.Count * dims),
            StoredBytes = file.LongLength, RowsPerBlock = table.RowsPerBlock,
        };
    }

    /// <summary>Where a vector segment's block table and vector section lie, from its head; see <see cref="VectorBlockTable"/>.</summary>
    internal static (uint Blocks, uint Vectors) Sections => (BlockSection, VectorSection);
}

/// <summary>A row of a sparse <see cref="PartitionVectors"/> was needed but not fetched: a bug in the caller's row selection.</summary>
public sealed class MissingRowException(int row) : InvalidOperationException($"row {row} of the partition was not fetched before the re-rank needed it")
{
    public int Row { get; } = row;
}

/// <summary>
/// A vector segment's block table, read from its head: where each block of rows lies in the blob and the
/// checksum that a ranged read of it must match.
/// </summary>
public sealed class VectorBlockTable
{
    /// <summary>What errors call the segment (a packed one's blob and range).</summary>
    public required string Name { get; init; }
    /// <summary>The blob the block ranges are read from (the segment's own, or the pack holding it).</summary>
    public string Blob { get => _blob ?? Name; init => _blob = value; }
    private readonly string? _blob;
    public required int Count { get; init; }
    public required int Dimensions { get; init; }
    public required int RowsPerBlock { get; init; }
    public required ulong[] Hashes { get; init; }
    /// <summary>Offset of the vector section (row 0) in <see cref="Blob"/>.</summary>
    public required long DataOffset { get; init; }
    /// <summary>Bytes a cold reader fetched to get this table (0 when it came with the whole segment).</summary>
    public int HeadBytes { get; init; }

    public int BlockCount => Hashes.Length;
    public int RowBytes => Dimensions * sizeof(float);
    public int BlockOf(int row) => row / RowsPerBlock;

    /// <summary>Rows of block b: [First, First + Rows).</summary>
    public (int First, int Rows) BlockRows(int b) => (b * RowsPerBlock, Math.Min(RowsPerBlock, Count - b * RowsPerBlock));

    /// <summary>Byte range of block b in the blob.</summary>
    public (long Offset, int Length) BlockRange(int b)
    {
        var (first, rows) = BlockRows(b);
        return (DataOffset + (long)first * RowBytes, rows * RowBytes);
    }

    /// <summary>Checks block b's bytes against its checksum and returns its rows; a mismatch names the blob and the rows.</summary>
    public float[] Decode(int b, ReadOnlySpan<byte> bytes)
    {
        var (first, rows) = BlockRows(b);
        if (bytes.Length != rows * RowBytes || XxHash3.HashToUInt64(bytes) != Hashes[b])
            throw new CorruptIndexException($"segment '{Name}' failed the checksum of block {b} (rows {first}..{first + rows - 1}): the blob is corrupt");
        return MemoryMarshal.Cast<byte, float>(bytes).ToArray();
    }

    /// <summary>The head length a segment for <paramref name="count"/> rows of <paramref name="dims"/> floats has, as this build writes it.</summary>
    public static int ExpectedHeadLength(int count, int dims) =>
        SegmentFile.HeadLengthFor(2, 8 + 8L * PartitionVectors.BlockCount(count, PartitionVectors.RowsPerBlockFor(dims)));

    /// <summary>
    /// Parses and validates a head read by a ranged read (<see cref="SegmentFile.OpenHead"/>). A segment packed in a larger
    /// blob gives that <paramref name="blob"/> and where the segment starts in it (<paramref name="segmentOffset"/>).
    /// </summary>
    public static VectorBlockTable FromHead(byte[] head, string name, PartitionEntry entry, int dims, string? blob = null, long segmentOffset = 0)
    {
        var v = SegmentFile.OpenHead(head, name, SegmentKind.Vectors);
        if (v.Rows != entry.Count || v.Columns != dims) throw new CorruptIndexException($"segment '{name}' does not match its manifest entry");
        if (v.TotalLength != entry.Vectors.Bytes) throw new CorruptIndexException($"segment '{name}' is {v.TotalLength} bytes by its header, {entry.Vectors.Bytes} by the manifest");
        var table = FromView(v, entry, dims, head.Length);
        return segmentOffset == 0 && blob is null ? table : new VectorBlockTable
        {
            Name = table.Name, Blob = blob ?? name, Count = table.Count, Dimensions = dims, RowsPerBlock = table.RowsPerBlock, Hashes = table.Hashes,
            DataOffset = segmentOffset + table.DataOffset, HeadBytes = table.HeadBytes,
        };
    }

    internal static VectorBlockTable FromView(SegmentView v, PartitionEntry entry, int dims, int headBytes = 0)
    {
        var (blockSection, vectorSection) = PartitionVectors.Sections;
        var table = v.Section(blockSection);
        if (table.Length < 8) throw new CorruptIndexException($"segment '{v.Name}' has a truncated block table");
        int rowsPerBlock = BinaryPrimitives.ReadInt32LittleEndian(table), blocks = BinaryPrimitives.ReadInt32LittleEndian(table[4..]);
        if (rowsPerBlock < 1 || blocks != PartitionVectors.BlockCount(entry.Count, rowsPerBlock) || table.Length != 8 + 8L * blocks)
            throw new CorruptIndexException($"segment '{v.Name}' has an inconsistent block table ({blocks} blocks of {rowsPerBlock} rows for {entry.Count} rows)");
        var (offset, length) = v.SectionRange(vectorSection);
        if (length != (long)entry.Count * dims * sizeof(float)) throw new CorruptIndexException($"segment '{v.Name}' has a vector section of {length} bytes where {(long)entry.Count * dims * sizeof(float)} were expected");
        return new VectorBlockTable
        {
            Name = v.Name, Count = entry.Count, Dimensions = dims, RowsPerBlock = rowsPerBlock,
            Hashes = MemoryMarshal.Cast<byte, ulong>(table[8..]).ToArray(), DataOffset = offset, HeadBytes = headBytes,
        };
    }
}
