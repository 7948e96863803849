using Squash.Index.Attributes;
using Squash.Index.Format;
using Squash.Index.Model;
using Squash.Storage.Writes;

namespace Squash.Storage.Builds;

/// <summary>What one task needs: its job, the stores, and a check that the job has not been cancelled or failed meanwhile.</summary>
public sealed class BuildTaskContext(BuildJob job, BuildJobStore jobs, IndexStore index, string task, CancellationToken ct)
{
    public BuildJob Job { get; } = job;
    public BuildJobStore Jobs { get; } = jobs;
    public IndexStore Index { get; } = index;
    public IBlobStore Blobs => Jobs.Blobs;
    /// <summary>The task's name in errors and logs, e.g. <c>assign[3]</c>.</summary>
    public string Task { get; } = task;
    public CancellationToken CancellationToken { get; } = ct;
    public string WorkPrefix => BuildJobStore.WorkPrefix(Job.Index, Job.BuildId);

    /// <summary>Throws <see cref="BuildStoppedException"/> when the job was cancelled or failed since the task began (checked before writes).</summary>
    public async Task ThrowIfStoppedAsync()
    {
        var now = await Jobs.GetAsync(Job.Index, Job.BuildId, CancellationToken).ConfigureAwait(false);
        if (now is null || BuildStatus.IsTerminal(now.Value.Job.Status)) throw new BuildStoppedException(now?.Job.Status ?? "deleted");
    }
}

/// <summary>How much a task did, for the job's progress figures; <paramref name="Detail"/> says where its time went (for the log).</summary>
public readonly record struct StageResult(long Vectors, long Bytes, string? Detail = null);

/// <summary>Times the phases of one task (read, compute, write…) for its log line: "read 1.2 s, assign 0.4 s, write 0.3 s".</summary>
public sealed class PhaseClock
{
    private readonly System.Diagnostics.Stopwatch _clock = System.Diagnostics.Stopwatch.StartNew();
    private readonly List<(string Phase, double Seconds)> _laps = [];
    private double _last;

    /// <summary>Ends the phase that ran since the previous lap (or the start).</summary>
    public void Lap(string phase)
    {
        double now = _clock.Elapsed.TotalSeconds;
        _laps.Add((phase, now - _last));
        _last = now;
    }

    public override string ToString() => string.Join(", ", _laps.Select(l => $"{l.Phase} {l.Seconds.ToString("0.00", System.Globalization.CultureInfo.InvariantCulture)} s"));
}

/// <summary>A stage about to start: how many tasks it has, and for the encode stage how many partitions they make.</summary>
public readonly record struct StagePlan(int Tasks, int? Partitions = null);

/// <summary>The work of each stage; the runner around it handles delivery, idempotency, progress and fan-in.</summary>
public interface IBuildStageWork
{
    /// <summary>
    /// Called once, by the task that starts <paramref name="stage"/>, before its messages are sent: returns how many
    /// tasks the stage has (the encode stage learns only now which partitions some row chose, and how to group them into tasks).
    /// </summary>
    Task<StagePlan> PrepareStageAsync(BuildTaskContext context, string stage);
    /// <summary>Validates what could not be checked at submission and fits what every later task shares; writes it under the work prefix.</summary>
    Task<StageResult> TrainAsync(BuildTaskContext context);
    /// <summary>Routes one chunk of the source to the partitions.</summary>
    Task<StageResult> AssignAsync(BuildTaskContext context, int chunk);
    /// <summary>Encodes one task's partitions and writes their segments into the version folder (create-only).</summary>
    Task<StageResult> EncodeAsync(BuildTaskContext context, int task);
    /// <summary>Writes what belongs to the whole version (routing) and returns the manifest to publish (calibrated, when asked).</summary>
    Task<IndexManifest> PrepareManifestAsync(BuildTaskContext context);
}

/// <summary>The job stopped (cancelled or failed) while a task ran: the task ends without effect.</summary>
public sealed class BuildStoppedException(string status) : Exception($"the build is {status}")
{
    public string Status { get; } = status;
}

/// <summary>Input the build cannot use (bad rows, a bad attributes file, options that do not fit the data): no retry can help.</summary>
public sealed class BuildInputException(string message) : Exception(message);

/// <summary>What the queue function answers: success (the host deletes the message) or a failure worth retrying.</summary>
public sealed record TaskOutcome(bool Success, string Log)
{
    public static TaskOutcome Done(string log) => new(true, log);
    public static TaskOutcome Retry(string log) => new(false, log);
}

/// <summary>
/// Runs one delivered task message: at-least-once delivery, so every step can be repeated. A finished task leaves a
/// create-only marker, and a redelivered one only repeats the fan-in check. The last task of a stage to finish moves the
/// job on: a create-only gate blob decides which one (even when several finish together), and only it enqueues the next
/// stage (again on its own redelivery, which is harmless: tasks are no-ops once done). Exactly one publisher: there is one
/// publish task, and it commits in the job record (compare-and-swap) before it writes the manifest, which is how a
/// cancel and a publish never both win.
/// </summary>
public sealed class BuildTaskRunner(BuildJobStore jobs, IBuildQueue queue, IBuildStageWork work)
{
    public BuildJobStore Jobs { get; } = jobs;
    /// <summary>Called after a rebuild job wrote its version (unpublished): asks ingest to take it over (the Functions app queues an ingest).</summary>
    public Func<BuildJob, CancellationToken, Task>? RebuildWritten { get; init; }

    /// <param name="dequeueCount">How many times the message has been delivered (1 the first time).</param>
    /// <param name="maxDequeueCount">The host's limit (host.json): a failure on the last delivery fails the job.</param>
    public async Task<TaskOutcome> RunAsync(BuildTaskMessage message, int dequeueCount, int maxDequeueCount, CancellationToken ct)
    {
        var task = message.Describe();
        (BuildJob Job, string ETag)? found;
        try
        {
            found = await Jobs.GetAsync(message.Index, message.BuildId, ct).ConfigureAwait(false);
        }
        catch (BuildRecordDamagedException e)
        {
            // Every delivery would read the same bytes: drop the message, naming the record, rather than retry it into the poison queue.
            return TaskOutcome.Done($"dropped message {task}: {e.Message}; the build cannot go on (delete the record, and build again)");
        }
        if (found is null) return TaskOutcome.Done($"dropped message {task}: index '{message.Index}' has no build '{message.BuildId}'");
        var job = found.Value.Job;
        // A finished job takes no more work, whatever a late (redelivered or stale) message names.
        if (BuildStatus.IsTerminal(job.Status)) return TaskOutcome.Done($"build {job.BuildId} is {job.Status}: {task} skipped");
        int total = job.TaskCount(message.Stage);
        if (message.Task < 0 || message.Task >= total)
        {
            var now = await FailAsync(job, new BuildError("bad-message", $"the queue message on {BuildStages.QueueName(message.Stage)} names task {message.Task}; the build has {total} {message.Stage} task{(total == 1 ? "" : "s")} (0..{total - 1})", task), ct).ConfigureAwait(false);
            return TaskOutcome.Done(now.Status == BuildStatus.Failed && now.Error?.Code == "bad-message"
                ? $"build {job.BuildId} failed: bad message {task}"
                : $"build {job.BuildId} is {now.Status}: bad message {task} dropped");
        }

        var context = new BuildTaskContext(job, Jobs, new IndexStore(Jobs.Blobs, job.Index), task, ct);
        try
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            string? detail = null;
            var seen = await Jobs.ReadTallyAsync(job.Index, job.BuildId, message.Stage, ct).ConfigureAwait(false);
            var tally = seen.Tally;
            if (!tally.IsDone(message.Task))
            {
                job = await EnterStageAsync(job, message.Stage, ct).ConfigureAwait(false);
                if (BuildStatus.IsTerminal(job.Status)) return TaskOutcome.Done($"build {job.BuildId} is {job.Status}: {task} skipped");
                if (message.Stage == BuildStages.Publish) return await PublishAsync(new BuildTaskContext(job, Jobs, context.Index, task, ct), ct).ConfigureAwait(false);
                var result = message.Stage switch
                {
                    BuildStages.Train => await work.TrainAsync(context).ConfigureAwait(false),
                    BuildStages.Assign => await work.AssignAsync(context, message.Task).ConfigureAwait(false),
                    _ => await work.EncodeAsync(context, message.Task).ConfigureAwait(false),
                };
                (tally, _) = await Jobs.RecordTaskAsync(job.Index, job.BuildId, message.Stage, message.Task, result.Vectors, result.Bytes, seen, ct).ConfigureAwait(false);
                detail = result.Detail;
            }
            else if (message.Stage == BuildStages.Publish)
            {
                return TaskOutcome.Done($"{task} of build {job.BuildId} was already done");
            }
            await AdvanceAsync(job, message.Stage, message.Task, tally, ct).ConfigureAwait(false);
            return TaskOutcome.Done($"{task} of build {job.BuildId} done in {clock.Elapsed.TotalSeconds:0.00} s{(detail is null ? "" : $" ({detail})")}; {Memory()}");
        }
        catch (BuildStoppedException e)
        {
            return TaskOutcome.Done($"{task} of build {job.BuildId} stopped: {e.Message}");
        }
        catch (Exception e) when (Permanent(e, task) is { } error)
        {
            await FailAsync(job, error, ct).ConfigureAwait(false);
            return TaskOutcome.Done($"build {job.BuildId} failed in {task}: {error.Message}");
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            if (dequeueCount >= maxDequeueCount)
                await FailAsync(job, new BuildError("task-failed", $"{e.Message} (failed on all {dequeueCount} deliveries)", task), ct).ConfigureAwait(false);
            return TaskOutcome.Retry($"{task} of build {job.BuildId} failed on delivery {dequeueCount} of {maxDequeueCount}: {e.GetType().Name}: {e.Message}");
        }
    }

    /// <summary>The worker's memory after a task, for its log line: the process's peak resident set so far and the managed heap now.</summary>
    private static string Memory()
    {
        using var self = System.Diagnostics.Process.GetCurrentProcess();
        return $"peak RSS {self.PeakWorkingSet64 / 1048576} MB, heap {GC.GetTotalMemory(false) / 1048576} MB";
    }

    private static BuildError? Permanent(Exception e, string task) => e switch
    {
        SourceChangedException => new BuildError("source-changed", e.Message, task),
        InvalidDataException or AttributeFormatException => new BuildError("bad-source", e.Message, task),
        BuildInputException or WriteLogConflictException => new BuildError("bad-input", e.Message, task),
        _ => null,
    };

    /// <summary>Moves the job's status forward to the stage's (never back), stamping the start time on the first task.</summary>
    private async Task<BuildJob> EnterStageAsync(BuildJob job, string stage, CancellationToken ct)
    {
        var status = BuildStages.StatusOf(stage);
        int rank = Array.IndexOf(BuildStages.All, stage);
        static int RankOf(BuildJob j) => j.Status == BuildStatus.Queued ? -1 : Array.IndexOf(BuildStages.All, StageOf(j.Status));
        // The starter of a stage moves the status before it sends the stage's messages, so a task usually has nothing to change.
        if (!BuildStatus.IsTerminal(job.Status) && RankOf(job) >= rank && job.StartedUtc is not null) return job;
        var (now, _) = await Jobs.UpdateAsync(job.Index, job.BuildId, j =>
        {
            if (BuildStatus.IsTerminal(j.Status)) return null;
            int current = RankOf(j);
            if (current >= rank && j.StartedUtc is not null) return null;
            return j with { Status = current >= rank ? j.Status : status, StartedUtc = j.StartedUtc ?? DateTimeOffset.UtcNow };
        }, ct).ConfigureAwait(false);
        return now;
    }

    private static string StageOf(string status) => status switch
    {
        BuildStatus.Training => BuildStages.Train,
        BuildStatus.Assigning => BuildStages.Assign,
        BuildStatus.Encoding => BuildStages.Encode,
        _ => BuildStages.Publish,
    };

    /// <summary>
    /// When every task of <paramref name="stage"/> is done (its tally is full), the one task that claims the gate starts the
    /// next stage: it copies the stage's figures into the job record and sends the next stage's messages.
    /// </summary>
    private async Task AdvanceAsync(BuildJob job, string stage, int task, StageTally tally, CancellationToken ct)
    {
        if (tally.Count < job.TaskCount(stage)) return;
        var next = BuildStages.All[Array.IndexOf(BuildStages.All, stage) + 1];
        if (!await Jobs.ClaimGateAsync(job.Index, job.BuildId, "start-" + next, $"{stage}-{task}", ct).ConfigureAwait(false)) return;
        // The owner's own redelivery sends again only if the first delivery stopped before it had sent everything.
        if (await Jobs.IsGateSentAsync(job.Index, job.BuildId, "start-" + next, ct).ConfigureAwait(false)) return;
        var plan = await work.PrepareStageAsync(new BuildTaskContext(job, Jobs, new IndexStore(Jobs.Blobs, job.Index), $"{stage}[{task}]", ct), next).ConfigureAwait(false);
        // Only the gate's owner gets here, and only once per stage (until its messages are sent), so the figures are added once.
        int nextRank = Array.IndexOf(BuildStages.All, next);
        var (now, _) = await Jobs.UpdateAsync(job.Index, job.BuildId, j => BuildStatus.IsTerminal(j.Status) ? null
            : j.Status != BuildStatus.Queued && Array.IndexOf(BuildStages.All, StageOf(j.Status)) >= nextRank ? null
            : j.WithStage(stage, s => s with { Done = s.Total }).WithStage(next, s => s with { Total = plan.Tasks }) with
            {
                Status = BuildStages.StatusOf(next),
                Partitions = plan.Partitions ?? j.Partitions,
                VectorsAssigned = j.VectorsAssigned + (stage == BuildStages.Assign ? tally.Vectors : 0),
                VectorsEncoded = j.VectorsEncoded + (stage == BuildStages.Encode ? tally.Vectors : 0),
                BytesWritten = j.BytesWritten + tally.Bytes,
            }, ct).ConfigureAwait(false);
        if (BuildStatus.IsTerminal(now.Status)) return;
        for (int t = 0; t < now.TaskCount(next); t++)
            await queue.SendAsync(new BuildTaskMessage { Index = job.Index, BuildId = job.BuildId, Stage = next, Task = t }, ct).ConfigureAwait(false);
        await Jobs.MarkGateSentAsync(job.Index, job.BuildId, "start-" + next, ct).ConfigureAwait(false);
    }

    private async Task<TaskOutcome> PublishAsync(BuildTaskContext context, CancellationToken ct)
    {
        var job = context.Job;
        var clock = new PhaseClock();
        var manifest = await work.PrepareManifestAsync(context).ConfigureAwait(false);
        clock.Lap(manifest.Calibration is null ? "routing" : "routing and calibration");
        // Train checked the log too, but writes may have reached it since; a rebuild's version is meant to take the log.
        if (job.Rebuild is null && !job.PublishCommitted)
            await WriteLogConflict.ThrowIfAnyAsync(context.Index, manifest.Dimensions, manifest.Attributes is { HasIds: true }, ct).ConfigureAwait(false);
        // The commit point: from here on a cancel is refused, and before it a cancel stops the publish.
        var (committed, _) = await Jobs.UpdateAsync(job.Index, job.BuildId, j => BuildStatus.IsTerminal(j.Status) || j.PublishCommitted ? null
            : j with { PublishCommitted = true }, ct).ConfigureAwait(false);
        if (!committed.PublishCommitted) return TaskOutcome.Done($"build {job.BuildId} is {committed.Status}: not published");
        var store = context.Index;
        if (job.Rebuild is { } rebuild) return await WriteRebuildAsync(context, manifest with { IndexedSequence = rebuild.CoversSequence }, clock, ct).ConfigureAwait(false);
        IndexStore.PublishResult result;
        // Writes landing between the check above and the pointer's move: the pointer is reserved for this shape while it moves.
        var guard = WriteLogConflict.PublishGuard(store, job.Version, manifest.Dimensions, manifest.Attributes is { HasIds: true });
        try
        {
            result = await store.PublishAsync(store.CreateSink(job.Version), manifest, verifiedBase: null, guard, ct).ConfigureAwait(false);
        }
        catch (BlobConditionFailedException)
        {
            // Our own manifest from an earlier delivery that stopped before the pointer moved: finish that publish.
            var written = await store.ReadManifestAsync(job.Version, ct).ConfigureAwait(false);
            await store.VerifyCompleteAsync(written, ct).ConfigureAwait(false);
            result = await store.MovePointerForwardAsync(job.Version, guard, ct).ConfigureAwait(false);
        }
        await Jobs.RecordTaskAsync(job.Index, job.BuildId, BuildStages.Publish, 0, 0, 0, ct: ct).ConfigureAwait(false);
        await Jobs.UpdateAsync(job.Index, job.BuildId, j => j.Status == BuildStatus.Succeeded ? null
            : j.WithStage(BuildStages.Publish, s => s with { Done = 1 }) with
            {
                Status = BuildStatus.Succeeded,
                FinishedUtc = DateTimeOffset.UtcNow,
                Current = result.Published,
                BytesWritten = j.BytesWritten + manifest.Routing.Bytes,
            }, ct).ConfigureAwait(false);
        clock.Lap("publish");
        await Jobs.DeleteWorkAsync(job.Index, job.BuildId, ct).ConfigureAwait(false);
        clock.Lap("clean-up");
        return TaskOutcome.Done($"build {job.BuildId} published version {job.Version}{(result.Published ? "" : $" (not current: {result.Current} is newer)")} ({clock}); {Memory()}");
    }

    /// <summary>
    /// A rebuild's publish: the version is written complete (manifest and all) but the pointer is not moved. Writes may have
    /// been indexed since its base, so only ingest, under its lease, publishes it, with the log past its watermark applied.
    /// </summary>
    private async Task<TaskOutcome> WriteRebuildAsync(BuildTaskContext context, IndexManifest manifest, PhaseClock clock, CancellationToken ct)
    {
        var job = context.Job;
        var store = context.Index;
        try
        {
            await store.CreateSink(job.Version).WriteAsync(IndexStore.ManifestName, manifest.ToJson(), ct).ConfigureAwait(false);
        }
        catch (BlobConditionFailedException)
        {
            // Written by an earlier delivery of this task.
        }
        await store.VerifyCompleteAsync(await store.ReadManifestAsync(job.Version, ct).ConfigureAwait(false), ct).ConfigureAwait(false);
        await Jobs.RecordTaskAsync(job.Index, job.BuildId, BuildStages.Publish, 0, 0, 0, ct: ct).ConfigureAwait(false);
        await Jobs.UpdateAsync(job.Index, job.BuildId, j => j.Status == BuildStatus.Succeeded ? null
            : j.WithStage(BuildStages.Publish, s => s with { Done = 1 }) with
            {
                Status = BuildStatus.Succeeded,
                FinishedUtc = DateTimeOffset.UtcNow,
                Current = false,
                BytesWritten = j.BytesWritten + manifest.Routing.Bytes,
            }, ct).ConfigureAwait(false);
        clock.Lap("write");
        await Jobs.DeleteWorkAsync(job.Index, job.BuildId, ct).ConfigureAwait(false);
        if (RebuildWritten is not null) await RebuildWritten(job, ct).ConfigureAwait(false);
        clock.Lap("clean-up");
        return TaskOutcome.Done($"rebuild {job.BuildId} wrote version {job.Version} covering log sequence {manifest.IndexedSequence}; ingest publishes it ({clock}); {Memory()}");
    }

    /// <summary>Fails the job (unless it already finished or the publish committed) and removes its work blobs.</summary>
    public async Task<BuildJob> FailAsync(BuildJob job, BuildError error, CancellationToken ct)
    {
        // After the commit only the publisher itself fails the job (the one task that could still be writing), and only
        // while the pointer does not name the version: a publish that moved it has succeeded, whatever came after.
        var store = new IndexStore(Jobs.Blobs, job.Index);
        bool published = error.Task == "publish[0]"
            && await Jobs.Blobs.GetInfoAsync(store.VersionPrefix(job.Version) + IndexStore.ManifestName, ct).ConfigureAwait(false) is not null
            && (await store.GetCurrentAsync(ct).ConfigureAwait(false)) is { } current && VersionIds.Compare(current.Version, job.Version) >= 0;
        var (now, changed) = await Jobs.UpdateAsync(job.Index, job.BuildId, j => BuildStatus.IsTerminal(j.Status) || (j.PublishCommitted && (published || error.Task != "publish[0]")) ? null
            : j with { Status = BuildStatus.Failed, FinishedUtc = DateTimeOffset.UtcNow, Error = error }, ct).ConfigureAwait(false);
        if (changed) await CleanUpAsync(now, ct).ConfigureAwait(false);
        return now;
    }

    /// <summary>Best effort: the work blobs and the unpublished version's segments (gc would remove those later anyway).</summary>
    public async Task CleanUpAsync(BuildJob job, CancellationToken ct)
    {
        try
        {
            await Jobs.DeleteWorkAsync(job.Index, job.BuildId, ct).ConfigureAwait(false);
            if (job.PublishCommitted) return;
            var prefix = new IndexStore(Jobs.Blobs, job.Index).VersionPrefix(job.Version);
            var names = new List<string>();
            await foreach (var b in Jobs.Blobs.ListAsync(prefix, ct).ConfigureAwait(false)) names.Add(b.Name);
            foreach (var n in names) await Jobs.Blobs.DeleteAsync(n, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException and not CorruptIndexException) { }
    }
}
