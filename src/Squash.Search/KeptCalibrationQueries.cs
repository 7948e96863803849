using Squash.Index.Build.Sources;
using Squash.Index.Model;
using Squash.Storage;

namespace Squash.Search;

/// <summary>
/// The user's calibration queries and filter families kept with an index (<see cref="RecallCalibration.QueriesBlob"/>,
/// <see cref="RecallCalibration.FilterBlobs"/>): written into the version's folder by the build that calibrated on them (the
/// queries as .fvecs, each family as a filter file of one line per query, named as its file was), read back by the
/// recalibration after writes and by a full rebuild. A recalibration writes them again into its own version's folder, so
/// that an old folder is not kept for these blobs alone.
/// </summary>
public static class KeptCalibrationQueries
{
    /// <summary>
    /// Writes <paramref name="queries"/> (the user's, as calibrated on, with their filter families) into
    /// <paramref name="version"/>'s folder, create-only (the same bytes already there, as from a repeated queue task, are
    /// fine), and returns <paramref name="calibration"/> naming them.
    /// </summary>
    public static async Task<RecallCalibration> KeepAsync(IndexStore store, string version, CalibrationQueries queries, RecallCalibration calibration, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(queries);
        ArgumentNullException.ThrowIfNull(calibration);
        var kept = await WriteAsync(store, version, RecallCalibration.QueriesBlobName, ToFvecs(queries.Data, queries.Count, queries.Dimensions), ct).ConfigureAwait(false);
        SegmentRef[]? filters = null;
        if (queries.Filters is { Count: > 0 } families)
        {
            filters = new SegmentRef[families.Count];
            for (int f = 0; f < families.Count; f++)
            {
                if (families[f].Texts.Length != queries.Count) throw new ArgumentException($"family '{families[f].Name}' has {families[f].Texts.Length} filters for {queries.Count} queries", nameof(queries));
                var text = string.Concat(families[f].Texts.Select(t => (t ?? "null") + "\n"));
                filters[f] = await WriteAsync(store, version, RecallCalibration.FilterBlobName(f, families[f].Name), System.Text.Encoding.UTF8.GetBytes(text), ct).ConfigureAwait(false);
            }
        }
        return calibration with { QueriesBlob = kept, FilterBlobs = filters };
    }

    /// <summary>The queries <paramref name="m"/>'s calibration keeps, with their filter families, as the build calibrated on them; null when it keeps none.</summary>
    public static async Task<CalibrationQueries?> ReadAsync(IndexStore store, IndexManifest m, CancellationToken ct)
    {
        if (m.Calibration?.QueriesBlob is not { } kept) return null;
        var name = store.BlobName(m, kept);
        var bytes = await ReadBlobAsync(store, m, kept, ct).ConfigureAwait(false);
        SourceLayout layout;
        try { layout = VectorSourceFormat.ReadLayout(name, bytes, bytes.LongLength); }
        catch (InvalidDataException e) { throw new Squash.Index.Format.CorruptIndexException(e.Message); }
        if (layout.Dimensions != m.Dimensions || layout.Rows != m.Calibration.Queries || layout.Rows > int.MaxValue)
            throw new Squash.Index.Format.CorruptIndexException($"'{name}' holds {layout.Rows} queries of {layout.Dimensions} dimensions; the manifest says {m.Calibration.Queries} of {m.Dimensions}");
        int n = (int)layout.Rows;
        var data = new float[(long)n * layout.Dimensions];
        try { VectorSourceFormat.DecodeRows(name, layout, 0, n, bytes.AsSpan(checked((int)layout.OffsetOf(0)), checked((int)(n * layout.RowBytes))), data); }
        catch (InvalidDataException e) { throw new Squash.Index.Format.CorruptIndexException(e.Message); }
        var families = new List<CalibrationFilters>();
        foreach (var f in m.Calibration.FilterBlobs ?? [])
        {
            var blob = store.BlobName(m, f);
            var text = System.Text.Encoding.UTF8.GetString(await ReadBlobAsync(store, m, f, ct).ConfigureAwait(false));
            // Written one line per query ("null" for none), so every line counts: a blank one is damage, not padding.
            var lines = text.EndsWith('\n') ? text[..^1].Split('\n') : text.Split('\n');
            if (lines.Length != n || lines.Any(l => l.Trim().Length == 0))
                throw new Squash.Index.Format.CorruptIndexException($"'{blob}' holds {lines.Length} lines (blank ones among them: {lines.Count(l => l.Trim().Length == 0)}); the manifest keeps {n} queries");
            families.Add(CalibrationFilterFile.Parse(RecallCalibration.FamilyOf(f), lines).Family(n));
        }
        return new CalibrationQueries(data, n, layout.Dimensions, null, "queries", Filters: families.Count > 0 ? families : null);
    }

    /// <summary>A kept blob's bytes, checked against the size the manifest records.</summary>
    public static async Task<byte[]> ReadBlobAsync(IndexStore store, IndexManifest m, SegmentRef kept, CancellationToken ct)
    {
        var name = store.BlobName(m, kept);
        var bytes = await store.Blobs.ReadAllAsync(name, ct).ConfigureAwait(false);
        if (bytes.LongLength != kept.Bytes) throw new Squash.Index.Format.CorruptIndexException($"'{name}' has {bytes.LongLength} bytes; the manifest says {kept.Bytes}");
        return bytes;
    }

    private static async Task<SegmentRef> WriteAsync(IndexStore store, string version, string blob, byte[] bytes, CancellationToken ct)
    {
        var name = store.VersionPrefix(version) + blob;
        try
        {
            await store.Blobs.WriteAsync(name, bytes, WriteCondition.IfNotExists, ct).ConfigureAwait(false);
        }
        catch (BlobConditionFailedException)
        {
            if (!(await store.Blobs.ReadAllAsync(name, ct).ConfigureAwait(false)).AsSpan().SequenceEqual(bytes))
                throw new InvalidOperationException($"blob '{name}' already exists with other content");
        }
        return new SegmentRef(blob, bytes.LongLength) { Version = version };
    }

    private static byte[] ToFvecs(float[] data, int count, int dims)
    {
        int record = VectorSourceFormat.FvecsRecordBytes(dims);
        var bytes = new byte[(long)count * record];
        for (int q = 0; q < count; q++) VectorSourceFormat.WriteFvecsRecord(bytes.AsSpan(q * record, record), data.AsSpan(q * dims, dims));
        return bytes;
    }
}
