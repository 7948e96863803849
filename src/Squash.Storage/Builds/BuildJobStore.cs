using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Squash.Storage.Builds;

/// <summary>
/// Build jobs in the blob store, beside the index they build:
/// <code>
/// {index}/builds/{buildId}/job.json         the job record (compare-and-swap on its ETag)
/// {index}/build-keys/{sha256(key)}          Idempotency-Key → build id (create-only)
/// {index}/build-work/{buildId}/done/...     one create-only marker per finished task (a redelivered task sees it)
/// {index}/build-work/{buildId}/gates/...    create-only blobs that decide who starts the next stage
/// {index}/build-work/{buildId}/...          what the stages hand each other (plan, runs, partition entries)
/// </code>
/// Work blobs are deleted when a build succeeds; job records stay (they are small) so a finished job can be shown.
/// </summary>
public sealed class BuildJobStore(IBlobStore blobs)
{
    /// <summary>How often an update retries its compare-and-swap when other writers keep changing the record.</summary>
    private const int MaxUpdateAttempts = 100;

    public IBlobStore Blobs { get; } = blobs;

    public static string JobName(string index, string buildId) => $"{index}/builds/{buildId}/job.json";
    public static string WorkPrefix(string index, string buildId) => $"{index}/build-work/{buildId}/";
    private static string KeyName(string index, string key) => $"{index}/build-keys/{Hash(key)}";
    private static string MarkerName(string index, string buildId, string stage, int task) => $"{WorkPrefix(index, buildId)}done/{stage}-{task:D6}";
    private static string GateName(string index, string buildId, string gate) => $"{WorkPrefix(index, buildId)}gates/{gate}";

    /// <summary>A build id: <c>b</c> + the submission time + random digits, so ids sort by submission (like version ids).</summary>
    public static string NewBuildId(DateTimeOffset now) => "b" + VersionIds.New(now)[1..];

    public static bool IsValidBuildId(string? id) => id is { Length: > 1 } && id[0] == 'b' && VersionIds.StartedUtc("v" + id[1..]) is not null
        && id.AsSpan(id.Length - 12).IndexOfAnyExcept("0123456789abcdef") < 0;

    public static string Hash(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    /// <summary>
    /// Stores a new job, or returns the job an earlier request with the same <paramref name="idempotencyKey"/> created
    /// (Created false). Throws <see cref="IdempotencyConflictException"/> when the key was used for a different request.
    /// </summary>
    public async Task<(BuildJob Job, bool Created)> CreateAsync(BuildJob job, string? idempotencyKey, string requestHash, CancellationToken ct = default)
    {
        if (idempotencyKey is not null)
        {
            var keyName = KeyName(job.Index, idempotencyKey);
            var record = JsonSerializer.SerializeToUtf8Bytes(new IdempotencyRecord(job.BuildId, requestHash), BuildJson.Default.IdempotencyRecord);
            try
            {
                await Blobs.WriteAsync(keyName, record, WriteCondition.IfNotExists, ct).ConfigureAwait(false);
            }
            catch (BlobConditionFailedException)
            {
                var existing = JsonSerializer.Deserialize(await Blobs.ReadAllAsync(keyName, ct).ConfigureAwait(false), BuildJson.Default.IdempotencyRecord)
                    ?? throw new InvalidDataException($"'{keyName}' is empty");
                if (existing.RequestHash != requestHash) throw new IdempotencyConflictException(idempotencyKey, existing.BuildId);
                if (await GetAsync(job.Index, existing.BuildId, ct).ConfigureAwait(false) is { } earlier) return (earlier.Job, false);
                // The first request stopped between its key and its record: finish its work under its id.
                job = job with { BuildId = existing.BuildId };
            }
        }
        try
        {
            await Blobs.WriteAsync(JobName(job.Index, job.BuildId), job.ToJson(), WriteCondition.IfNotExists, ct).ConfigureAwait(false);
            return (job, true);
        }
        catch (BlobConditionFailedException) when (idempotencyKey is not null)
        {
            // A concurrent request with the same key won the race to the record.
            var earlier = await GetAsync(job.Index, job.BuildId, ct).ConfigureAwait(false);
            return (earlier!.Value.Job, false);
        }
    }

    public async Task<(BuildJob Job, string ETag)?> GetAsync(string index, string buildId, CancellationToken ct = default)
    {
        var name = JobName(index, buildId);
        var info = await Blobs.GetInfoAsync(name, ct).ConfigureAwait(false);
        if (info is null) return null;
        try
        {
            // The ETag is read first: a record changed in between fails the caller's next compare-and-swap, never passes it.
            var bytes = await Blobs.ReadAllAsync(name, ct).ConfigureAwait(false);
            return (BuildJob.Parse(bytes, name), info.ETag);
        }
        catch (BlobNotFoundException)
        {
            return null;
        }
    }

    /// <summary>The most recent jobs of an index, newest first.</summary>
    public async Task<IReadOnlyList<BuildJob>> ListAsync(string index, int limit, CancellationToken ct = default)
    {
        var names = new List<string>();
        await foreach (var b in Blobs.ListAsync($"{index}/builds/", ct).ConfigureAwait(false))
            if (b.Name.EndsWith("/job.json", StringComparison.Ordinal)) names.Add(b.Name);
        var jobs = new List<BuildJob>();
        foreach (var name in names.OrderDescending(StringComparer.Ordinal).Take(limit))
        {
            try { jobs.Add(BuildJob.Parse(await Blobs.ReadAllAsync(name, ct).ConfigureAwait(false), name)); }
            catch (BlobNotFoundException) { }
        }
        return jobs;
    }

    /// <summary>
    /// Applies <paramref name="change"/> by compare-and-swap, re-reading and re-applying it when another writer got
    /// there first; <paramref name="change"/> returns null to leave the record as it is. Returns the record as it
    /// stands afterwards and whether this call changed it.
    /// </summary>
    public async Task<(BuildJob Job, bool Changed)> UpdateAsync(string index, string buildId, Func<BuildJob, BuildJob?> change, CancellationToken ct = default)
    {
        for (int attempt = 1; ; attempt++)
        {
            var (job, etag) = await GetAsync(index, buildId, ct).ConfigureAwait(false)
                ?? throw new BuildNotFoundException(index, buildId);
            var next = change(job);
            if (next is null) return (job, false);
            try
            {
                await Blobs.WriteAsync(JobName(index, buildId), next.ToJson(), WriteCondition.IfMatch(etag), ct).ConfigureAwait(false);
                return (next, true);
            }
            catch (BlobConditionFailedException) when (attempt < MaxUpdateAttempts)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(Random.Shared.Next(2, 10 + 5 * Math.Min(attempt, 20))), ct).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Records that a task finished; false when it already had (a redelivered message).</summary>
    public async Task<bool> MarkDoneAsync(string index, string buildId, string stage, int task, CancellationToken ct = default)
    {
        try
        {
            await Blobs.WriteAsync(MarkerName(index, buildId, stage, task), Array.Empty<byte>(), WriteCondition.IfNotExists, ct).ConfigureAwait(false);
            return true;
        }
        catch (BlobConditionFailedException)
        {
            return false;
        }
    }

    public async Task<bool> IsDoneAsync(string index, string buildId, string stage, int task, CancellationToken ct = default) =>
        await Blobs.GetInfoAsync(MarkerName(index, buildId, stage, task), ct).ConfigureAwait(false) is not null;

    /// <summary>How many tasks of a stage have finished (markers are the truth; the record's counters follow them).</summary>
    public async Task<int> CountDoneAsync(string index, string buildId, string stage, CancellationToken ct = default)
    {
        int n = 0;
        await foreach (var _ in Blobs.ListAsync($"{WorkPrefix(index, buildId)}done/{stage}-", ct).ConfigureAwait(false)) n++;
        return n;
    }

    /// <summary>
    /// Claims a gate with a create-only write: the first claimant owns it for ever. Returns whether
    /// <paramref name="owner"/> owns it (true also for the owner's own retry).
    /// </summary>
    public async Task<bool> ClaimGateAsync(string index, string buildId, string gate, string owner, CancellationToken ct = default)
    {
        var name = GateName(index, buildId, gate);
        try
        {
            await Blobs.WriteAsync(name, Encoding.UTF8.GetBytes(owner), WriteCondition.IfNotExists, ct).ConfigureAwait(false);
            return true;
        }
        catch (BlobConditionFailedException)
        {
            return Encoding.UTF8.GetString(await Blobs.ReadAllAsync(name, ct).ConfigureAwait(false)) == owner;
        }
    }

    /// <summary>Whether the gate's owner finished what the gate guards (sent the next stage's messages).</summary>
    public async Task<bool> IsGateSentAsync(string index, string buildId, string gate, CancellationToken ct = default) =>
        await Blobs.GetInfoAsync(GateName(index, buildId, gate) + ".sent", ct).ConfigureAwait(false) is not null;

    public async Task MarkGateSentAsync(string index, string buildId, string gate, CancellationToken ct = default)
    {
        try { await Blobs.WriteAsync(GateName(index, buildId, gate) + ".sent", Array.Empty<byte>(), WriteCondition.IfNotExists, ct).ConfigureAwait(false); }
        catch (BlobConditionFailedException) { }
    }

    /// <summary>Deletes a job's work blobs (best effort: leftovers are only storage, nothing reads them).</summary>
    public async Task DeleteWorkAsync(string index, string buildId, CancellationToken ct = default)
    {
        var names = new List<string>();
        await foreach (var b in Blobs.ListAsync(WorkPrefix(index, buildId), ct).ConfigureAwait(false)) names.Add(b.Name);
        foreach (var name in names)
        {
            try { await Blobs.DeleteAsync(name, ct).ConfigureAwait(false); }
            catch (Exception e) when (e is not OperationCanceledException) { }
        }
    }
}

public sealed class BuildNotFoundException(string index, string buildId) : Exception($"index '{index}' has no build '{buildId}'");

public sealed class IdempotencyConflictException(string key, string buildId)
    : Exception($"Idempotency-Key '{key}' was first used for build {buildId} with a different request")
{
    public string BuildId { get; } = buildId;
}
