namespace Squash.Storage.Builds;

/// <summary>
/// The files <c>squash build --endpoint</c> uploads into <c>{index}/uploads/</c> for a build are not versions, so version
/// garbage collection leaves them; this collects those no unfinished build reads. A finished build (succeeded, failed or
/// cancelled) never reads its source again, and a build that is queued or running keeps every blob it recorded at
/// submission. Uploads younger than the grace period stay too: a client uploads before it submits.
/// </summary>
public static class UploadCollection
{
    /// <summary>What was deleted and what was kept (blob names, in name order).</summary>
    public sealed record Result(IReadOnlyList<string> Deleted, IReadOnlyList<string> InUse, IReadOnlyList<string> Recent);

    public static string Prefix(string index) => $"{index}/uploads/";

    public static async Task<Result> CollectAsync(IBlobStore blobs, string index, TimeSpan grace, TimeProvider? clock = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(blobs);
        ArgumentException.ThrowIfNullOrEmpty(index);
        ArgumentOutOfRangeException.ThrowIfLessThan(grace, TimeSpan.Zero);
        var uploads = new List<BlobInfo>();
        await foreach (var b in blobs.ListAsync(Prefix(index), ct).ConfigureAwait(false)) uploads.Add(b);
        if (uploads.Count == 0) return new Result([], [], []);
        // The jobs are read after the uploads are listed: an upload a job submitted since then names is younger than the grace.
        var inUse = new HashSet<string>(StringComparer.Ordinal);
        foreach (var job in await new BuildJobStore(blobs).ListAsync(index, int.MaxValue, ct).ConfigureAwait(false))
        {
            if (BuildStatus.IsTerminal(job.Status)) continue;
            foreach (var source in job.Blobs) inUse.Add(source.Name);
            if (job.AttributesBlob is { } attributes) inUse.Add(attributes.Name);
            if (job.CalibrationQueriesBlob is { } queries) inUse.Add(queries.Name);
            foreach (var filters in job.CalibrationFilterBlobs ?? []) inUse.Add(filters.Name);
        }
        var now = (clock ?? TimeProvider.System).GetUtcNow();
        List<string> deleted = [], used = [], recent = [];
        foreach (var upload in uploads.OrderBy(b => b.Name, StringComparer.Ordinal))
        {
            if (inUse.Contains(upload.Name)) used.Add(upload.Name);
            else if (upload.LastModified is not { } modified || now - modified < grace) recent.Add(upload.Name);
            else
            {
                await blobs.DeleteAsync(upload.Name, ct).ConfigureAwait(false);
                deleted.Add(upload.Name);
            }
        }
        return new Result(deleted, used, recent);
    }
}
