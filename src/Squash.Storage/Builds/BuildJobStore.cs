using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Squash.Storage.Builds;

/// <summary>
/// Build jobs in the blob store, beside the index they build:
/// <code>
/// {index}/builds/{buildId}/job.json         the job record (compare-and-swap on its ETag)
/// {index}/build-keys/{sha256(key)}          Idempotency-Key → build id (create-only)
/// {index}/build-work/{buildId}/tally/{stage} the stage's finished tasks (a bit each) and what they did, by compare-and-swap
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
    private static string TallyName(string index, string buildId, string stage) => $"{WorkPrefix(index, buildId)}tally/{stage}";
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
        // One request: the ETag belongs to exactly the bytes read, so a compare-and-swap based on it is sound.
        if (await Blobs.ReadWithInfoAsync(name, ct).ConfigureAwait(false) is not { } read) return null;
        return (BuildJob.Parse(read.Bytes, name), read.Info.ETag);
    }

    /// <summary>
    /// The most recent jobs of an index, newest first; throws <see cref="BuildRecordDamagedException"/> for a record that
    /// cannot be read (for callers that must know every job, such as upload collection).
    /// </summary>
    public async Task<IReadOnlyList<BuildJob>> ListAsync(string index, int limit, CancellationToken ct = default)
    {
        var jobs = new List<BuildJob>();
        foreach (var listed in await ListRecordsAsync(index, limit, ct).ConfigureAwait(false))
            jobs.Add(listed.Job ?? throw listed.Damage!);
        return jobs;
    }

    /// <summary>
    /// The most recent job records of an index, newest first, each read or, when it cannot be read (not JSON, not a job's
    /// shape), carrying why: one damaged record does not hide the others.
    /// </summary>
    public async Task<IReadOnlyList<ListedBuild>> ListRecordsAsync(string index, int limit, CancellationToken ct = default)
    {
        var prefix = $"{index}/builds/";
        var names = new List<string>();
        await foreach (var b in Blobs.ListAsync(prefix, ct).ConfigureAwait(false))
            if (b.Name.EndsWith("/job.json", StringComparison.Ordinal)) names.Add(b.Name);
        var listed = new List<ListedBuild>();
        foreach (var name in names.OrderDescending(StringComparer.Ordinal).Take(limit))
        {
            var buildId = name[prefix.Length..^"/job.json".Length];
            try { listed.Add(new ListedBuild(buildId, name, BuildJob.Parse(await Blobs.ReadAllAsync(name, ct).ConfigureAwait(false), name), null)); }
            catch (BlobNotFoundException) { }
            catch (BuildRecordDamagedException e) { listed.Add(new ListedBuild(buildId, name, null, e)); }
        }
        return listed;
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

    /// <summary>What is recorded of a stage's finished tasks (empty before the first finishes), with the ETag to swap it against.</summary>
    public async Task<(StageTally Tally, string? ETag)> ReadTallyAsync(string index, string buildId, string stage, CancellationToken ct = default)
    {
        var name = TallyName(index, buildId, stage);
        if (await Blobs.ReadWithInfoAsync(name, ct).ConfigureAwait(false) is not { } read) return (StageTally.Empty, null);
        return (StageTally.Parse(read.Bytes, name), read.Info.ETag);
    }

    /// <summary>
    /// The job as a reader should see it: the record holds the figures of finished stages (the starter of each stage copies
    /// them in), and the running stage's come from its tally, so that a finishing task never has to update the record.
    /// </summary>
    public async Task<BuildJob> WithLiveProgressAsync(BuildJob job, CancellationToken ct = default)
    {
        var stage = job.Status switch
        {
            BuildStatus.Training => BuildStages.Train,
            BuildStatus.Assigning => BuildStages.Assign,
            BuildStatus.Encoding => BuildStages.Encode,
            BuildStatus.Publishing => BuildStages.Publish,
            _ => null,
        };
        if (stage is null) return job;
        StageTally tally;
        try { (tally, _) = await ReadTallyAsync(job.Index, job.BuildId, stage, ct).ConfigureAwait(false); }
        catch (InvalidDataException) { return job; }
        if (tally.Count == 0) return job;
        return job.WithStage(stage, s => s with { Done = Math.Max(s.Done, Math.Min(tally.Count, s.Total)) }) with
        {
            VectorsAssigned = job.VectorsAssigned + (stage == BuildStages.Assign ? tally.Vectors : 0),
            VectorsEncoded = job.VectorsEncoded + (stage == BuildStages.Encode ? tally.Vectors : 0),
            BytesWritten = job.BytesWritten + tally.Bytes,
        };
    }

    /// <summary>
    /// Records that task <paramref name="task"/> of <paramref name="stage"/> finished, with what it did, by compare-and-swap
    /// on the stage's tally (starting from <paramref name="seen"/>, the tally the task read when it began, so that an
    /// uncontended finish costs one write). Added is false when the task was already recorded (a redelivered message):
    /// its figures then count once. The tally after the swap tells the caller whether the stage is complete.
    /// </summary>
    public async Task<(StageTally Tally, bool Added)> RecordTaskAsync(string index, string buildId, string stage, int task, long vectors, long bytes,
        (StageTally Tally, string? ETag)? seen = null, CancellationToken ct = default)
    {
        var name = TallyName(index, buildId, stage);
        var (tally, etag) = seen ?? await ReadTallyAsync(index, buildId, stage, ct).ConfigureAwait(false);
        for (int attempt = 1; ; attempt++)
        {
            if (tally.IsDone(task)) return (tally, false);
            var next = tally.With(task, vectors, bytes);
            try
            {
                await Blobs.WriteAsync(name, next.ToJson(), etag is null ? WriteCondition.IfNotExists : WriteCondition.IfMatch(etag), ct).ConfigureAwait(false);
                return (next, true);
            }
            catch (BlobConditionFailedException) when (attempt < MaxUpdateAttempts)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(Random.Shared.Next(1, 5 + 2 * Math.Min(attempt, 20))), ct).ConfigureAwait(false);
                (tally, etag) = await ReadTallyAsync(index, buildId, stage, ct).ConfigureAwait(false);
            }
        }
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
        await Parallel.ForEachAsync(names, new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = ct }, async (name, t) =>
        {
            try { await Blobs.DeleteAsync(name, t).ConfigureAwait(false); }
            catch (Exception e) when (e is not OperationCanceledException) { }
        }).ConfigureAwait(false);
    }
}

/// <summary>A job record in a listing: the job, or (Job null) why the record at <paramref name="RecordName"/> cannot be read.</summary>
public sealed record ListedBuild(string BuildId, string RecordName, BuildJob? Job, BuildRecordDamagedException? Damage);

public sealed class BuildNotFoundException(string index, string buildId) : Exception($"index '{index}' has no build '{buildId}'");

public sealed class IdempotencyConflictException(string key, string buildId)
    : Exception($"Idempotency-Key '{key}' was first used for build {buildId} with a different request")
{
    public string BuildId { get; } = buildId;
}
