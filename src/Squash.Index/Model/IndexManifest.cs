using System.Text.Json;
using System.Text.Json.Serialization;
using Squash.Index.Attributes;
using Squash.Index.Format;

namespace Squash.Index.Model;

/// <summary>
/// The versioned description of one built index: what it holds, how it was built and which
/// segments make it up. Written last, after every segment it names (see IndexPublisher).
/// </summary>
public sealed record IndexManifest
{
    public const string FormatName = "squash-index";
    public const int CurrentFormatVersion = 1;
    /// <summary>
    /// A manifest in which some partition has appended segments or a deletion mask (written by ingest). Its own number so
    /// that a build that knows only format 1 refuses it rather than reading those partitions' base segments alone.
    /// </summary>
    public const int ExtendedFormatVersion = 2;
    /// <summary>
    /// A manifest in which some segment is a byte range of a shared blob (<see cref="SegmentRef.Offset"/>: an ingest run
    /// writes every partition it touched into one pack). Its own number so that a build that reads whole blobs only refuses it.
    /// </summary>
    public const int PackedFormatVersion = 3;
    /// <summary>
    /// A manifest whose appended codes segments may leave the partition's quantizer (mean, rotation, eigenvalues, inner cell
    /// boundaries) to its base segment (<see cref="PartitionCodes.ToAppendedSegment"/>). Its own number so that a build that expects the
    /// quantizer in every codes segment refuses the version instead of failing on a segment. Ingest writes it for every
    /// version with appended segments.
    /// </summary>
    public const int LeanAppendedFormatVersion = 4;

    /// <summary>The lowest format version that describes these partitions and routing: 1 plain, 2 extended, 3 packed.</summary>
    public static int FormatVersionFor(SegmentRef routing, IReadOnlyList<PartitionEntry> partitions) =>
        routing.Offset is not null || partitions.Any(p => p.Segments().Any(s => s.Offset is not null)) ? PackedFormatVersion
        : partitions.Any(p => p.IsComposite) ? ExtendedFormatVersion
        : CurrentFormatVersion;

    public string Format { get; init; } = FormatName;
    public int FormatVersion { get; init; } = CurrentFormatVersion;
    public required string Version { get; init; }
    public DateTimeOffset CreatedUtc { get; init; }
    /// <summary>Dimensions of the vectors users send.</summary>
    public required int Dimensions { get; init; }
    /// <summary>Dimensions of the internal space (one more than <see cref="Dimensions"/> for ip).</summary>
    public required int InternalDimensions { get; init; }
    public required string Metric { get; init; }
    /// <summary>Inner-product augmentation constant M (largest stored norm); 0 otherwise.</summary>
    public double MaxNorm { get; init; }
    public required long Count { get; init; }
    /// <summary>Global KLT dimensions kept before the per-partition KLT (the rest enters the residual norm).</summary>
    public required int GlobalDimensions { get; init; }
    public required BuildParameters Build { get; init; }
    public required SegmentRef Routing { get; init; }
    public required IReadOnlyList<PartitionEntry> Partitions { get; init; }
    /// <summary>Attribute schema and encoders; null when the index was built without attributes.</summary>
    public IndexAttributes? Attributes { get; init; }
    /// <summary>Recall each plan reached at build time (null: built without calibration, e.g. too few vectors).</summary>
    public RecallCalibration? Calibration { get; init; }
    /// <summary>
    /// The write-ahead log's watermark: every batch up to this sequence is in this version (0, and left out of the JSON,
    /// for a version built from files: a strong read or an ingest then starts at the log's first batch).
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public long IndexedSequence { get; init; }
    /// <summary>
    /// The row number the next ingested row with a string id gets (0, and left out of the JSON, for a version built
    /// from files: its rows are 0 … Count − 1). Row numbers are never reused, so they can exceed Count after deletes.
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public long NextRow { get; init; }
    /// <summary>
    /// Rows ingest has changed since the build this version descends from (what the full-rebuild trigger compares with the
    /// row count; 0, and left out of the JSON, for a version a build wrote).
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public long RowsChangedSinceBuild { get; init; }
    /// <summary>
    /// The version of the build this version descends from by ingest (null for a build's own version): a rebuild is applied
    /// only to the line of versions it was built from, never over a later build from files.
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? BuiltFrom { get; init; }
    /// <summary>The build this version descends from: <see cref="BuiltFrom"/>, or this version itself when a build wrote it.</summary>
    [JsonIgnore]
    public string Lineage => BuiltFrom ?? Version;

    /// <summary>One past the largest row number this version can hold: what row-indexed arrays are sized by.</summary>
    [JsonIgnore]
    public long RowLimit => Math.Max(NextRow, Count);

    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, ManifestJson.Default.IndexManifest);

    /// <summary>Parses and validates; <paramref name="name"/> is used in errors.</summary>
    public static IndexManifest Parse(ReadOnlySpan<byte> json, string name)
    {
        IndexManifest? m;
        try
        {
            m = JsonSerializer.Deserialize(json, ManifestJson.Default.IndexManifest);
        }
        catch (JsonException e)
        {
            throw new CorruptIndexException($"manifest '{name}' is not valid JSON: {e.Message}");
        }
        if (m is null) throw new CorruptIndexException($"manifest '{name}' is empty");
        if (m.Format != FormatName) throw new CorruptIndexException($"manifest '{name}' is not a Squash index manifest");
        if (m.FormatVersion is not (CurrentFormatVersion or ExtendedFormatVersion or PackedFormatVersion or LeanAppendedFormatVersion))
            throw new CorruptIndexException($"manifest '{name}' has format version {m.FormatVersion}; this build reads {CurrentFormatVersion} to {LeanAppendedFormatVersion}");
        if (m.FormatVersion < FormatVersionFor(m.Routing, m.Partitions))
            throw new CorruptIndexException($"manifest '{name}' has format version {m.FormatVersion} but uses {(FormatVersionFor(m.Routing, m.Partitions) == PackedFormatVersion ? "segments packed into shared blobs" : "appended segments or deletion masks")}");
        foreach (var s in m.Partitions.SelectMany(p => p.Segments()).Prepend(m.Routing))
            if (s.Offset is not null && (s.Offset < 0 || s.Bytes < SegmentFile.HeaderSize))
                throw new CorruptIndexException($"manifest '{name}': segment '{s.Name}'{(s.Offset is { } o ? $" at offset {o}" : "")} has an impossible range ({s.Bytes} bytes)");
        if (m.Dimensions < 1 || m.InternalDimensions < m.Dimensions || m.GlobalDimensions < 0 || m.GlobalDimensions > m.InternalDimensions)
            throw new CorruptIndexException($"manifest '{name}' has inconsistent dimensions");
        if (m.Partitions.Count == 0 && m.Count > 0) throw new CorruptIndexException($"manifest '{name}' lists no partitions");
        if (m.Partitions.Sum(p => (long)p.Count) != m.Count)
            throw new CorruptIndexException($"manifest '{name}': partition sizes do not add up to the vector count");
        if (m.Attributes is { } attrs)
        {
            foreach (var p in m.Partitions)
                if (p.Attributes is null || p.AttributeStats is null || p.AttributeStats.Count != attrs.Attributes.Count)
                    throw new CorruptIndexException($"manifest '{name}': partition {p.Id} lacks its attribute segment or statistics");
            foreach (var a in attrs.Attributes)
                if (a.Type is AttributeType.Number or AttributeType.Integer
                    && (a.Boundaries is null || a.Cells is < 1 or > AttributeEncoding.MaxCells || a.CellMin?.Length != a.Cells || a.CellMax?.Length != a.Cells || a.CellCounts?.Length != a.Cells))
                    throw new CorruptIndexException($"manifest '{name}': attribute '{a.Name}' has inconsistent cells");
        }
        m.Calibration?.Validate(name);
        return m;
    }
}

public sealed record BuildParameters
{
    public required int Partitions { get; init; }
    public required double BitsPerDimension { get; init; }
    public required int BudgetBits { get; init; }
    public required int MaxBitsPerDimension { get; init; }
    public required int Seed { get; init; }
    public required double Balance { get; init; }
    public required int KMeansIterations { get; init; }
    public double EnergyKept { get; init; } = 1;
    public double BuildSeconds { get; init; }
    /// <summary>
    /// Rows per partition the index was built around (rows ÷ partitions); ingest splits a partition past twice this. 0, and
    /// left out of the JSON, for an index built before it was recorded (the first ingest records the mean size then).
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public int PartitionTarget { get; init; }
}

/// <summary>
/// A segment named by the manifest, with its size for cheap verification: the whole blob <see cref="Name"/>, or, when
/// <see cref="Offset"/> is set, the bytes [Offset, Offset + Bytes) of that blob (a pack of several segments).
/// </summary>
public sealed record SegmentRef(string Name, long Bytes)
{
    /// <summary>
    /// Where the segment starts inside the blob when the blob packs several (an ingest run writes every segment of the
    /// partitions it touched into one pack per kind); null, and left out of the JSON, when the segment is the whole blob.
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? Offset { get; init; }

    /// <summary>
    /// The version folder the blob is in when it is not the manifest's own (an ingest references the segments of
    /// partitions it did not touch instead of copying them); null, and left out of the JSON, for the manifest's own.
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Version { get; init; }
}

public sealed record PartitionEntry
{
    public required int Id { get; init; }
    public required int Count { get; init; }
    /// <summary>Per-partition KLT dimensions that received bits (each has a sign bit).</summary>
    public required int CodedDimensions { get; init; }
    /// <summary>OSQ bits per vector (sign bits included: the sign is the top bit of each code).</summary>
    public required int BitsPerVector { get; init; }
    public required SegmentRef Codes { get; init; }
    public required SegmentRef Vectors { get; init; }
    /// <summary>The attribute segment (null without attributes).</summary>
    public SegmentRef? Attributes { get; init; }
    /// <summary>Per-attribute code counts, in schema order: what the filter planner estimates from.</summary>
    public IReadOnlyList<AttributeStats>? AttributeStats { get; init; }
    /// <summary>
    /// <see cref="PartitionCodes.ExpectedError"/> of a quantizer fitted afresh to the partition's rows, when one was last
    /// fitted (build, split, re-fit) or compared with the carried one; ingest re-fits only a partition whose carried error
    /// grew past that. Null in versions written before it was recorded.
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public double? FitError { get; init; }

    /// <summary>
    /// Rows ingest appended after the base segments (<see cref="Codes"/>, <see cref="Vectors"/>, <see cref="Attributes"/>)
    /// instead of rewriting them, oldest first; null when there are none. Such a partition's stored rows are the base rows,
    /// then each appended segment's, in order; <see cref="Deleted"/> masks some of them, and <see cref="Count"/> is the rows
    /// left.
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<AppendedRows>? Appended { get; init; }
    /// <summary>The deletion mask over the stored rows (a bit per row: replaced or deleted); null when no row is masked.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public SegmentRef? Deleted { get; init; }
    /// <summary>Rows in the base segments of a composite partition (<see cref="Count"/> counts the live rows); null otherwise.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? BaseCount { get; init; }

    /// <summary>True when the partition is more than its base segments: appended rows or a deletion mask.</summary>
    [JsonIgnore]
    public bool IsComposite => Appended is not null || Deleted is not null;
    /// <summary>Rows in the base segments.</summary>
    [JsonIgnore]
    public int BaseRows => BaseCount ?? Count;
    /// <summary>Rows stored in all its segments, masked ones included (the mask's length).</summary>
    [JsonIgnore]
    public int StoredRows => BaseRows + (Appended?.Sum(a => a.Count) ?? 0);
    /// <summary>Every segment the entry names: base, appended, mask.</summary>
    public IEnumerable<SegmentRef> Segments()
    {
        yield return Codes;
        yield return Vectors;
        if (Attributes is not null) yield return Attributes;
        foreach (var a in Appended ?? [])
        {
            yield return a.Codes;
            yield return a.Vectors;
            if (a.Attributes is not null) yield return a.Attributes;
        }
        if (Deleted is not null) yield return Deleted;
    }

    /// <summary>The entry's raw-vector segments: base, then appended (the mask that leaves the live rows is <see cref="Deleted"/>).</summary>
    public IEnumerable<SegmentRef> VectorSegments() => (Appended ?? []).Select(a => a.Vectors).Prepend(Vectors);

    /// <summary>The entry describing only the base segments (what their headers must match).</summary>
    public PartitionEntry BaseEntry() => IsComposite ? this with { Count = BaseRows, Appended = null, Deleted = null, BaseCount = null } : this;
}

/// <summary>Rows one ingest appended to a partition, encoded with the partition's quantizer (its outer cell boundaries possibly widened).</summary>
public sealed record AppendedRows
{
    public required int Count { get; init; }
    public required SegmentRef Codes { get; init; }
    public required SegmentRef Vectors { get; init; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public SegmentRef? Attributes { get; init; }

    /// <summary>A partition entry for just these rows (what their segments' headers must match).</summary>
    public PartitionEntry EntryOf(PartitionEntry partition) => partition with
    {
        Count = Count, Codes = Codes, Vectors = Vectors, Attributes = Attributes, Appended = null, Deleted = null, BaseCount = null,
    };
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(IndexManifest))]
internal sealed partial class ManifestJson : JsonSerializerContext;
