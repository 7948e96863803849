using Squash.Index.Model;

namespace Squash.Storage;

/// <summary>
/// Several segments written as one blob: an ingest run puts every segment of the partitions it touched into two packs
/// (one request each) instead of one blob per segment, and the manifest names each segment by (pack, offset, bytes).
/// Every segment keeps its own header and checksums, so a reader fetches one by a ranged read and validates it as if it
/// were a whole blob; the manifest is the pack's directory (a pack has no header of its own).
/// </summary>
public sealed class SegmentPack(string name)
{
    /// <summary>Codes, attributes, deletion masks and routing: what a reader or the next ingest run reads for every partition.</summary>
    public const string IndexName = "index.pack";
    /// <summary>Raw vectors: read for re-ranking, by rows or whole, rarely by ingest.</summary>
    public const string VectorsName = "vectors.pack";

    private readonly List<byte[]> _segments = [];
    private long _length;

    /// <summary>The pack's blob name inside its version folder.</summary>
    public string Name { get; } = name;
    public long Length => _length;
    public int Count => _segments.Count;

    /// <summary>Appends a segment; returns the manifest's reference to it.</summary>
    public SegmentRef Add(byte[] segment)
    {
        var reference = new SegmentRef(Name, segment.LongLength) { Offset = _length };
        _segments.Add(segment);
        _length += segment.LongLength;
        return reference;
    }

    /// <summary>The blob's bytes: the segments back to back, in the order they were added.</summary>
    public byte[] ToBytes()
    {
        var bytes = new byte[_length];
        long at = 0;
        foreach (var s in _segments)
        {
            s.CopyTo(bytes, at);
            at += s.LongLength;
        }
        return bytes;
    }

    /// <summary>Whether a blob name is a pack's (inside a version folder).</summary>
    public static bool IsPack(string blobName) =>
        blobName.EndsWith("/" + IndexName, StringComparison.Ordinal) || blobName.EndsWith("/" + VectorsName, StringComparison.Ordinal);
}
