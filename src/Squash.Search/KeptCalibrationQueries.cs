using Squash.Index.Build.Sources;
using Squash.Index.Model;
using Squash.Storage;

namespace Squash.Search;

/// <summary>
/// The user's calibration queries kept with an index (<see cref="RecallCalibration.QueriesBlob"/>): written as an .fvecs
/// blob into the version's folder by the build that calibrated on them, read back by the recalibration after writes (which
/// writes them into its own version's folder, so that an old folder is not kept for this blob alone).
/// </summary>
public static class KeptCalibrationQueries
{
    /// <summary>
    /// Writes <paramref name="queries"/> (the user's, as calibrated on) into <paramref name="version"/>'s folder, create-only
    /// (the same bytes already there, as from a repeated queue task, are fine); returns the reference a manifest keeps.
    /// </summary>
    public static async Task<SegmentRef> WriteAsync(IndexStore store, string version, CalibrationQueries queries, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(queries);
        var bytes = ToFvecs(queries.Data, queries.Count, queries.Dimensions);
        var name = store.VersionPrefix(version) + RecallCalibration.QueriesBlobName;
        try
        {
            await store.Blobs.WriteAsync(name, bytes, WriteCondition.IfNotExists, ct).ConfigureAwait(false);
        }
        catch (BlobConditionFailedException)
        {
            if (!(await store.Blobs.ReadAllAsync(name, ct).ConfigureAwait(false)).AsSpan().SequenceEqual(bytes))
                throw new InvalidOperationException($"blob '{name}' already exists with other content");
        }
        return new SegmentRef(RecallCalibration.QueriesBlobName, bytes.LongLength) { Version = version };
    }

    /// <summary>The blob <paramref name="m"/>'s calibration keeps, written again into <paramref name="version"/>'s folder (create-only).</summary>
    public static async Task<SegmentRef> CopyAsync(IndexStore store, IndexManifest m, string version, CancellationToken ct)
    {
        var queries = await ReadAsync(store, m, ct).ConfigureAwait(false) ?? throw new ArgumentException($"version {m.Version} keeps no calibration queries", nameof(m));
        return await WriteAsync(store, version, queries, ct).ConfigureAwait(false);
    }

    /// <summary>The queries <paramref name="m"/>'s calibration keeps, as the build calibrated on them (no filters: ingest keeps the filtered bands); null when it keeps none.</summary>
    public static async Task<CalibrationQueries?> ReadAsync(IndexStore store, IndexManifest m, CancellationToken ct)
    {
        if (m.Calibration?.QueriesBlob is not { } kept) return null;
        var name = store.BlobName(m, kept);
        var bytes = await store.Blobs.ReadAllAsync(name, ct).ConfigureAwait(false);
        if (bytes.LongLength != kept.Bytes) throw new Squash.Index.Format.CorruptIndexException($"'{name}' has {bytes.LongLength} bytes; the manifest says {kept.Bytes}");
        SourceLayout layout;
        try { layout = VectorSourceFormat.ReadLayout(name, bytes, bytes.LongLength); }
        catch (InvalidDataException e) { throw new Squash.Index.Format.CorruptIndexException(e.Message); }
        if (layout.Dimensions != m.Dimensions || layout.Rows != m.Calibration.Queries || layout.Rows > int.MaxValue)
            throw new Squash.Index.Format.CorruptIndexException($"'{name}' holds {layout.Rows} queries of {layout.Dimensions} dimensions; the manifest says {m.Calibration.Queries} of {m.Dimensions}");
        int n = (int)layout.Rows;
        var data = new float[(long)n * layout.Dimensions];
        try { VectorSourceFormat.DecodeRows(name, layout, 0, n, bytes.AsSpan(checked((int)layout.OffsetOf(0)), checked((int)(n * layout.RowBytes))), data); }
        catch (InvalidDataException e) { throw new Squash.Index.Format.CorruptIndexException(e.Message); }
        return new CalibrationQueries(data, n, layout.Dimensions, null, "queries");
    }

    private static byte[] ToFvecs(float[] data, int count, int dims)
    {
        var bytes = new byte[(long)count * (4 + 4L * dims)];
        for (int q = 0; q < count; q++)
        {
            var row = bytes.AsSpan(q * (4 + 4 * dims), 4 + 4 * dims);
            System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(row, dims);
            System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan(q * dims, dims)).CopyTo(row[4..]);
        }
        return bytes;
    }
}
