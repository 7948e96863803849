using Squash.Index.Build.Sources;

namespace Squash.Storage.Builds;

/// <summary>A source that cannot be built from; <see cref="Field"/> names the request field it came from.</summary>
public sealed class BuildSourceException(string field, string message) : Exception(message)
{
    public string Field { get; } = field;
}

/// <summary>A source blob whose ETag is no longer the one recorded at submission: the build must not mix two versions of its input.</summary>
public sealed class SourceChangedException(string name, string recorded, string? now)
    : Exception(now is null
        ? $"source blob '{name}' was deleted after the build was submitted"
        : $"source blob '{name}' changed after the build was submitted (ETag {recorded} at submission, {now} now); submit the build again")
{
    public string BlobName { get; } = name;
}

/// <summary>
/// Vector sources in the blob store: one blob, or every blob under a prefix in name order (so a very large source
/// can come in many files). Layouts are read from each blob's first bytes at submission; rows are read later
/// with ranged reads, each checked against the ETag recorded then.
/// </summary>
public static class BlobVectorSource
{
    /// <summary>Most blobs one source may have.</summary>
    public const int MaxBlobs = 10_000;

    /// <summary>
    /// The blobs <paramref name="vectors"/> names: the blob of that name, or else every blob under <c>vectors/</c>.
    /// Throws <see cref="BuildSourceException"/> (field <c>source.vectors</c>) when there is none, a blob is not a
    /// readable vector file, or blobs disagree on dimensions.
    /// </summary>
    public static async Task<IReadOnlyList<BuildSourceBlob>> ResolveAsync(IBlobStore blobs, string vectors, CancellationToken ct = default)
    {
        const string field = "source.vectors";
        var infos = new List<BlobInfo>();
        if (!vectors.EndsWith('/') && await blobs.GetInfoAsync(vectors, ct).ConfigureAwait(false) is { } single) infos.Add(single);
        else
        {
            var prefix = vectors.TrimEnd('/') + "/";
            await foreach (var b in blobs.ListAsync(prefix, ct).ConfigureAwait(false))
            {
                infos.Add(b);
                if (infos.Count > MaxBlobs) throw new BuildSourceException(field, $"more than {MaxBlobs:N0} blobs under '{prefix}'; a source has at most {MaxBlobs:N0}");
            }
            if (infos.Count == 0) throw new BuildSourceException(field, $"no blob named '{vectors.TrimEnd('/')}' and no blobs under '{prefix}' in the store");
            infos.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        }
        var result = new List<BuildSourceBlob>();
        long total = 0;
        foreach (var info in infos)
        {
            var blob = await ReadLayoutAsync(blobs, info, field, ct).ConfigureAwait(false);
            if (result.Count > 0 && blob.Dimensions != result[0].Dimensions)
                throw new BuildSourceException(field, $"blob '{info.Name}' has {blob.Dimensions} dimensions; '{result[0].Name}' has {result[0].Dimensions} (every blob of a source must agree)");
            total += blob.Rows;
            if (total > int.MaxValue) throw new BuildSourceException(field, $"the source holds more than {int.MaxValue:N0} vectors, the most one index can hold");
            result.Add(blob);
        }
        return result;
    }

    /// <summary>
    /// One vector blob named exactly <paramref name="name"/> (no prefix), as <see cref="ResolveAsync"/> reads each of a
    /// source's blobs; errors name <paramref name="field"/>.
    /// </summary>
    public static async Task<BuildSourceBlob> ResolveOneAsync(IBlobStore blobs, string name, string field, CancellationToken ct = default)
    {
        var info = await blobs.GetInfoAsync(name, ct).ConfigureAwait(false) ?? throw new BuildSourceException(field, $"no blob named '{name}' in the store");
        var blob = await ReadLayoutAsync(blobs, info, field, ct).ConfigureAwait(false);
        if (blob.Rows == 0) throw new BuildSourceException(field, $"{name}: holds no vectors");
        return blob;
    }

    private static async Task<BuildSourceBlob> ReadLayoutAsync(IBlobStore blobs, BlobInfo info, string field, CancellationToken ct)
    {
        if (VectorSourceFormat.FormatOf(info.Name) is null)
            throw new BuildSourceException(field, $"blob '{info.Name}' is not a vector file (.fvecs, .bvecs or .npy)");
        if (info.Length == 0) throw new BuildSourceException(field, $"{info.Name}: empty file");
        int probe = (int)Math.Min(info.Length, VectorSourceFormat.HeaderProbeBytes);
        byte[] start;
        try { start = await blobs.ReadRangeAsync(info.Name, 0, probe, ct).ConfigureAwait(false); }
        catch (BlobNotFoundException) { throw new BuildSourceException(field, $"blob '{info.Name}' was deleted while the source was read"); }
        SourceLayout layout;
        try { layout = VectorSourceFormat.ReadLayout(info.Name, start, info.Length); }
        catch (InvalidDataException e) { throw new BuildSourceException(field, e.Message); }
        return new BuildSourceBlob(info.Name, info.ETag, info.Length, layout.Format, layout.Element.ToString(), layout.Rows, layout.Dimensions, layout.DataOffset, layout.RecordPrefix);
    }

    /// <summary>Throws <see cref="SourceChangedException"/> unless the blob still has the ETag recorded at submission.</summary>
    public static async Task CheckUnchangedAsync(IBlobStore blobs, string name, string etag, CancellationToken ct)
    {
        var info = await blobs.GetInfoAsync(name, ct).ConfigureAwait(false);
        if (info is null || info.ETag != etag) throw new SourceChangedException(name, etag, info?.ETag);
    }

    /// <summary>
    /// Rows [<paramref name="first"/>, <paramref name="first"/> + <paramref name="count"/>) of the whole source (its blobs
    /// back to back), as float32 row-major into <paramref name="destination"/>. Each blob touched is checked against its
    /// recorded ETag before and after its bytes are read, so a row range never mixes old and new content unnoticed.
    /// </summary>
    public static async Task ReadRowsAsync(IBlobStore blobs, IReadOnlyList<BuildSourceBlob> source, long first, int count, float[] destination, CancellationToken ct = default)
    {
        int dims = source[0].Dimensions;
        long blobStart = 0;
        int written = 0;
        foreach (var blob in source)
        {
            long blobEnd = blobStart + blob.Rows;
            long from = Math.Max(first + written, blobStart), to = Math.Min(first + count, blobEnd);
            if (from < to)
            {
                var layout = blob.Layout();
                long localFirst = from - blobStart;
                int rows = (int)(to - from);
                await CheckUnchangedAsync(blobs, blob.Name, blob.ETag, ct).ConfigureAwait(false);
                // Ranged reads of at most 8 MB each, a few in flight: one decodes while the next downloads.
                int perRead = (int)Math.Max(1, (8L << 20) / layout.RowBytes);
                int pieces = (rows + perRead - 1) / perRead, at = written;
                await Parallel.ForEachAsync(Enumerable.Range(0, pieces), new ParallelOptions { MaxDegreeOfParallelism = 4, CancellationToken = ct }, async (piece, t) =>
                {
                    int done = piece * perRead, n = Math.Min(perRead, rows - done);
                    byte[] bytes;
                    try { bytes = await blobs.ReadRangeAsync(blob.Name, layout.OffsetOf(localFirst + done), (int)(n * layout.RowBytes), t).ConfigureAwait(false); }
                    catch (BlobNotFoundException) { throw new SourceChangedException(blob.Name, blob.ETag, null); }
                    VectorSourceFormat.DecodeRows(blob.Name, layout, localFirst + done, n, bytes, destination.AsSpan((at + done) * dims, n * dims));
                }).ConfigureAwait(false);
                await CheckUnchangedAsync(blobs, blob.Name, blob.ETag, ct).ConfigureAwait(false);
                written += rows;
            }
            blobStart = blobEnd;
            if (written == count) break;
        }
        if (written != count) throw new ArgumentOutOfRangeException(nameof(count), $"rows {first}..{first + count} are past the source's end");
    }
}
