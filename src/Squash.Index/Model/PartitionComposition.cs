using Squash.Index.Attributes;
using Squash.Index.Format;

namespace Squash.Index.Model;

/// <summary>
/// A partition that ingest extended instead of rewriting (<see cref="PartitionEntry.IsComposite"/>): its base segments, the
/// segments of rows appended after them, and a deletion mask over all those stored rows. Readers see one plain partition:
/// the stored rows in order (base, then each appended segment), masked ones left out, so the scan code never knows.
/// Appended codes use the partition's quantizer; a later segment's outer cell boundaries are at least as wide as every
/// earlier one's (ingest widens them and never narrows), so the last segment's boundaries hold for every row.
/// </summary>
public static class PartitionComposition
{
    private const uint MaskSection = 1;

    public static byte[] MaskToSegment(bool[] mask)
    {
        var words = new ulong[(mask.Length + 63) / 64];
        for (int i = 0; i < mask.Length; i++) if (mask[i]) words[i >> 6] |= 1UL << (i & 63);
        return SegmentFile.Write(SegmentKind.DeletionMask, mask.Length, 1, [(MaskSection, SegmentFile.Bytes(words))]);
    }

    public static bool[] MaskFromSegment(byte[] file, string name, PartitionEntry entry)
    {
        var v = SegmentFile.Open(file, name, SegmentKind.DeletionMask);
        int n = entry.StoredRows;
        if (v.Rows != n) throw new CorruptIndexException($"deletion mask '{name}' covers {v.Rows} rows; the partition stores {n}");
        var words = v.Array<ulong>(MaskSection, (n + 63) / 64);
        var mask = new bool[n];
        int masked = 0;
        for (int i = 0; i < n; i++) if (mask[i] = (words[i >> 6] >> (i & 63) & 1) != 0) masked++;
        if (n - masked != entry.Count) throw new CorruptIndexException($"deletion mask '{name}' leaves {n - masked} rows; the manifest says {entry.Count}");
        return mask;
    }

    /// <summary>The stored rows a reader sees, as (segment, row in it): every unmasked row, base first.</summary>
    public static (int Part, int Row)[] LiveRows(IReadOnlyList<int> partCounts, bool[]? mask)
    {
        var rows = new List<(int, int)>(partCounts.Sum());
        int stored = 0;
        for (int part = 0; part < partCounts.Count; part++)
            for (int r = 0; r < partCounts[part]; r++, stored++)
                if (mask is null || !mask[stored]) rows.Add((part, r));
        return rows.ToArray();
    }

    public static PartitionCodes Codes(IReadOnlyList<PartitionCodes> parts, (int Part, int Row)[] rows, long storedBytes)
    {
        var first = parts[0];
        int n = rows.Length, md = first.CodedDimensions, words = first.SignWords;
        var cells = new byte[(long)n * md];
        var signs = new ulong[(long)n * words];
        var residual = new float[n];
        var ids = new int[n];
        for (int i = 0; i < n; i++)
        {
            var (part, row) = rows[i];
            var c = parts[part];
            c.Cells.AsSpan(row * md, md).CopyTo(cells.AsSpan(i * md, md));
            c.Signs.AsSpan(row * words, words).CopyTo(signs.AsSpan(i * words, words));
            residual[i] = c.ResidualNorms[row];
            ids[i] = c.Ids[row];
        }
        // The base's boundaries as each appended segment in turn left them (a lean one carries the outer ones only).
        var boundaries = (float[])first.Boundaries.Clone();
        for (int part = 1; part < parts.Count; part++)
        {
            if (parts[part].Widths.Length != first.Widths.Length || !parts[part].Widths.AsSpan().SequenceEqual(first.Widths))
                throw new CorruptIndexException($"appended codes of partition {first.Id} have other code widths than its base segment");
            parts[part].ApplyBoundaries(boundaries);
        }
        return new PartitionCodes
        {
            Id = first.Id, Count = n, GlobalDimensions = first.GlobalDimensions, CodedDimensions = md, Mean = first.Mean, Rotation = first.Rotation,
            Eigenvalues = first.Eigenvalues, Widths = first.Widths, Boundaries = boundaries, BoundaryOffsets = first.BoundaryOffsets,
            Signs = signs, SignWords = words, Cells = cells, ResidualNorms = residual, Ids = ids, StoredBytes = storedBytes,
        };
    }

    public static PartitionVectors Vectors(IReadOnlyList<PartitionVectors> parts, (int Part, int Row)[] rows, long storedBytes)
    {
        int d = parts[0].Dimensions;
        var data = new float[(long)rows.Length * d];
        for (int i = 0; i < rows.Length; i++) parts[rows[i].Part].Row(rows[i].Row).CopyTo(data.AsSpan(i * d, d));
        return new PartitionVectors { Count = rows.Length, Dimensions = d, Data = data, StoredBytes = storedBytes, RowsPerBlock = PartitionVectors.RowsPerBlockFor(d) };
    }

    public static PartitionAttributes Attributes(IndexAttributes info, IReadOnlyList<PartitionAttributes> parts, (int Part, int Row)[] rows, long storedBytes) =>
        PartitionAttributes.Gather(info, parts, rows, storedBytes);
}
