using Squash.Functions.Api;
using Squash.Storage;
using Squash.Storage.Builds;
using Squash.Storage.Writes;

namespace Squash.Functions.Writes;

/// <summary>The index's last full rebuild as <c>GET /api/indexes/{index}</c> reports it.</summary>
public static class RebuildReporting
{
    /// <summary>
    /// The report, or null when the index never queued a rebuild. A record or job blob that does not parse is reported as
    /// status <c>unreadable</c> with the reason naming it: the index itself still answers (ingest fails naming the blob).
    /// </summary>
    public static async Task<RebuildInfo?> InfoAsync(IndexStore store, CancellationToken ct)
    {
        try
        {
            return await ReadAsync(store, ct).ConfigureAwait(false);
        }
        catch (InvalidDataException e)
        {
            return new RebuildInfo("", "unreadable", 0, Reason: e.Message);
        }
    }

    private static async Task<RebuildInfo?> ReadAsync(IndexStore store, CancellationToken ct)
    {
        if (store.Name.Length == 0 || await RebuildRecord.ReadAsync(store.Blobs, store.Name, ct).ConfigureAwait(false) is not { } read) return null;
        var r = read.Record;
        string status = r.Outcome ?? "queued";
        if (r.IsActive && await new BuildJobStore(store.Blobs).GetAsync(store.Name, r.BuildId, ct).ConfigureAwait(false) is { } job)
            status = job.Job.Status == BuildStatus.Succeeded ? "built" : job.Job.Status;
        return new RebuildInfo(r.BuildId, status, r.CoversSequence, r.PublishedVersion, r.Reason);
    }
}
