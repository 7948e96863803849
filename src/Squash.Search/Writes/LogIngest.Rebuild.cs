using System.Text.Json;
using Squash.Index.Attributes;
using Squash.Index.Build.Sources;
using Squash.Index.Model;
using Squash.Storage;
using Squash.Storage.Builds;
using Squash.Storage.Writes;

namespace Squash.Search.Writes;

/// <summary>
/// When to rebuild an index in full, and where the rebuild's jobs go. <paramref name="Share"/>: rows changed since the build
/// the current version descends from, as a share of its rows (0 turns the trigger off). Without <paramref name="Jobs"/> and
/// <paramref name="Queue"/> (<c>squash ingest</c> on a store without queues) ingest only reports that a rebuild is due.
/// </summary>
public sealed record RebuildSettings(double Share, BuildJobStore? Jobs = null, IBuildQueue? Queue = null)
{
    /// <summary>
    /// Half the rows: by then the partitioning and the quantizers were fitted to data of which at most half is still there,
    /// and the rebuild (about one build's time, in the queue's workers) is paid once per half the index rewritten.
    /// </summary>
    public const double DefaultShare = 0.5;
}

/// <summary>What ingest did about the full rebuild in a run: queued one, published one, saw one running, or found one due.</summary>
public sealed record RebuildReport(string Message, RebuildRecord? Record = null, string? Queued = null, string? Published = null)
{
    /// <summary>A run that published one rebuild and then queued the next says both.</summary>
    public static RebuildReport? Join(RebuildReport? first, RebuildReport? then) => first is null ? then : then is null ? first
        : new RebuildReport($"{first.Message}; {then.Message}", then.Record ?? first.Record, then.Queued ?? first.Queued, then.Published ?? first.Published);
}

public static partial class LogIngest
{
    /// <summary>A finished rebuild to apply the log onto, instead of the current version, and the current version it replaces.</summary>
    private sealed record Rebase(IndexManifest Rebuilt, string CurrentVersion, long CurrentIndexed);

    /// <summary>How long a claimed rebuild whose job does not exist yet is taken to be still on its way (the claimer writes the snapshot first).</summary>
    public static readonly TimeSpan RebuildSubmitGrace = TimeSpan.FromMinutes(10);

    /// <summary>Rows per vector blob of a rebuild's snapshot (about 64 MB at 128 dimensions).</summary>
    private const int SnapshotBlobRows = 1 << 17;

    /// <summary>Where a rebuild's source lives: under the uploads, which gc keeps while an unfinished build reads them.</summary>
    public static string RebuildSourcePrefix(string index, string baseVersion) => $"{UploadCollection.Prefix(index)}rebuild-{baseVersion}/";

    /// <summary>
    /// Under the lease, before applying the log: a rebuild whose job has written its version is published here, with the log
    /// past its watermark applied on top (at least up to the current version's watermark), as the successor of the current
    /// version by compare-and-swap; a rebuild that failed or was cancelled is closed (the current version stays).
    /// </summary>
    private static async Task<(IngestResult? Round, RebuildReport? Report)> AdoptRebuildAsync(IndexStore store, WriteLog log, TimeProvider? clock, CancellationToken ct)
    {
        if (store.Name.Length == 0) return (null, null);
        var read = await RebuildRecord.ReadAsync(store.Blobs, store.Name, ct).ConfigureAwait(false);
        if (read is not { Record.IsActive: true } found) return (null, null);
        var (record, etag) = found;
        var now = (clock ?? TimeProvider.System).GetUtcNow();
        async Task<RebuildReport> CloseAsync(string outcome, string reason)
        {
            var closed = record with { Outcome = outcome, Reason = reason, FinishedUtc = now };
            await RebuildRecord.TryWriteAsync(store.Blobs, store.Name, closed, etag, ct).ConfigureAwait(false);
            return new RebuildReport($"full rebuild {record.BuildId} {outcome}: {reason}; version {record.BaseVersion}'s line stays current", closed);
        }

        var job = (await new BuildJobStore(store.Blobs).GetAsync(store.Name, record.BuildId, ct).ConfigureAwait(false))?.Job;
        if (job is null)
            return (null, now - record.SubmittedUtc < RebuildSubmitGrace
                ? new RebuildReport($"full rebuild {record.BuildId} is being queued", record)
                : await CloseAsync(RebuildRecord.Failed, "its job was never created").ConfigureAwait(false));
        if (job.Status == BuildStatus.Failed) return (null, await CloseAsync(RebuildRecord.Failed, job.Error is { } e ? $"{e.Code} in {e.Task}: {e.Message}" : "the job failed").ConfigureAwait(false));
        if (job.Status == BuildStatus.Cancelled) return (null, await CloseAsync(RebuildRecord.Cancelled, "the job was cancelled").ConfigureAwait(false));
        if (job.Status != BuildStatus.Succeeded) return (null, new RebuildReport($"full rebuild {record.BuildId} is {job.Status} (covers sequence {record.CoversSequence})", record));

        var current = await store.OpenCurrentAsync(ct).ConfigureAwait(false);
        // A build from files published since the base is the user's newer index: the rebuild of the old one must not replace it.
        if (current.Lineage != record.Lineage || current.IndexedSequence < record.CoversSequence)
            return (null, await CloseAsync(RebuildRecord.Superseded, $"version {current.Version} descends from another build ({current.Lineage})").ConfigureAwait(false));
        IndexManifest rebuilt;
        try
        {
            rebuilt = await store.ReadManifestAsync(record.Version, ct).ConfigureAwait(false);
            await store.VerifyCompleteAsync(rebuilt, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is Squash.Index.Format.CorruptIndexException or BlobNotFoundException or IndexNotFoundException)
        {
            return (null, await CloseAsync(RebuildRecord.Failed, $"its version {record.Version} cannot be read: {e.Message}").ConfigureAwait(false));
        }
        if (rebuilt.IndexedSequence != record.CoversSequence)
            return (null, await CloseAsync(RebuildRecord.Failed, $"its version {record.Version} covers sequence {rebuilt.IndexedSequence}, not {record.CoversSequence}").ConfigureAwait(false));

        var round = await RunAsync(store, log, DefaultMaxBatches, clock, new Rebase(rebuilt, current.Version, current.IndexedSequence), requestCalibration: null, ct).ConfigureAwait(false);
        if (!round.Published)
            return (round, new RebuildReport($"full rebuild {record.BuildId}: version {current.Version} was replaced while the log was applied onto the rebuild; the next run tries again", record));
        var done = record with { Outcome = RebuildRecord.Published, PublishedVersion = round.Version, FinishedUtc = now };
        await RebuildRecord.TryWriteAsync(store.Blobs, store.Name, done, etag, ct).ConfigureAwait(false);
        return (round, new RebuildReport($"full rebuild {record.BuildId} published as version {round.Version}: rebuilt from version {record.BaseVersion} (sequence {record.CoversSequence}), "
            + $"batches {record.CoversSequence + 1}–{round.ToSequence} applied on top", done, Published: round.Version));
    }

    /// <summary>
    /// After a run has applied the log and released the lease (a second run may be applying more meanwhile): once the rows changed since the current version's build reach the share,
    /// queues one full rebuild of the current version's live rows (unless one is running, or the last one failed and not
    /// enough rows have changed since: the share again), or says that one is due when there is no build queue.
    /// </summary>
    private static async Task<RebuildReport?> ConsiderRebuildAsync(IndexStore store, RebuildSettings settings, TimeProvider? clock, CancellationToken ct)
    {
        if (settings.Share <= 0 || store.Name.Length == 0) return null;
        var m = await store.OpenCurrentAsync(ct).ConfigureAwait(false);
        double threshold = settings.Share * m.Count;
        if (m.Count == 0 || m.RowsChangedSinceBuild < threshold) return null;
        var read = await RebuildRecord.ReadAsync(store.Blobs, store.Name, ct).ConfigureAwait(false);
        if (read is { Record.IsActive: true }) return null; // reported by the adoption pass
        // The count is of changes (rows written or removed), not of the rows held now: after deletes it can pass the row count.
        string due = $"{m.RowsChangedSinceBuild:N0} rows changed (written or removed) since the index was built, against the {m.Count:N0} it holds now (rebuild share {settings.Share:0.##})";
        if (read is { Record: { Outcome: RebuildRecord.Failed or RebuildRecord.Cancelled } last } && last.Lineage == m.Lineage
            && m.RowsChangedSinceBuild < last.ChangedAtSubmission + threshold)
            return new RebuildReport($"{due}; the last full rebuild ({last.BuildId}) {last.Outcome}, so the next waits until {last.ChangedAtSubmission + (long)Math.Ceiling(threshold):N0} have changed", last);
        if (settings.Jobs is null || settings.Queue is null)
            return new RebuildReport($"{due}: a full rebuild is due, and this ingest has no build queue to run it (serve with --store azure:… and a queue account, or build again from files)");
        if (store.Name.Length == 0) return null;

        var opened = await OpenedIndex.OpenUnpublishedAsync(store, m, ct).ConfigureAwait(false);
        var order = LiveRowsInOrder(opened, out var gap);
        if (gap is not null) return new RebuildReport($"{due}, but a rebuild cannot keep this index's row numbers: {gap}");

        var now = (clock ?? TimeProvider.System).GetUtcNow();
        var buildId = BuildJobStore.NewBuildId(now);
        var version = NewerVersion(m.Version, clock);
        var record = new RebuildRecord
        {
            BuildId = buildId, BaseVersion = m.Version, Lineage = m.Lineage, CoversSequence = m.IndexedSequence, Version = version,
            ChangedAtSubmission = m.RowsChangedSinceBuild, SubmittedUtc = now,
            EarlierFailures = read is { Record.Outcome: RebuildRecord.Failed or RebuildRecord.Cancelled } f && f.Record.Lineage == m.Lineage ? f.Record.EarlierFailures + 1 : 0,
        };
        // The record is claimed first: a second ingest (without the lease, or after it) sees it and queues nothing.
        if (!await RebuildRecord.TryWriteAsync(store.Blobs, store.Name, record, read?.ETag, ct).ConfigureAwait(false)) return null;
        var job = await WriteSourceAsync(store, opened, order, record, ct).ConfigureAwait(false);
        await settings.Jobs.CreateAsync(job, null, "rebuild " + m.Version, ct).ConfigureAwait(false);
        await settings.Queue.SendAsync(new BuildTaskMessage { Index = job.Index, BuildId = job.BuildId, Stage = BuildStages.Train, Task = 0 }, ct).ConfigureAwait(false);
        return new RebuildReport($"{due}: queued full rebuild {buildId} of version {m.Version} (covers sequence {m.IndexedSequence})", record, Queued: buildId);
    }

    /// <summary>
    /// Every live row as (partition, position), in the order the rebuild's source lists them: by row number. An index without
    /// ids names its rows by number, and a build numbers rows by position, so its live rows must be exactly 0 … Count − 1
    /// (<paramref name="gap"/> says why not); one with ids keeps them by id and is renumbered.
    /// </summary>
    private static (int P, int Pos)[] LiveRowsInOrder(OpenedIndex opened, out string? gap)
    {
        var rows = new List<(long Row, int P, int Pos)>((int)opened.Manifest.Count);
        for (int p = 0; p < opened.PartitionCount; p++)
        {
            var ids = opened.Codes(p).Ids;
            for (int i = 0; i < ids.Length; i++) rows.Add((ids[i], p, i));
        }
        rows.Sort((a, b) => a.Row.CompareTo(b.Row));
        gap = null;
        if (opened.Manifest.Attributes is not { HasIds: true } && rows.Count > 0 && rows[^1].Row != rows.Count - 1)
            gap = $"it has no ids and its live rows are not 0 … {rows.Count - 1:N0} (deleted or added row numbers leave gaps up to {rows[^1].Row:N0})";
        return rows.Select(r => (r.P, r.Pos)).ToArray();
    }

    /// <summary>
    /// Writes the base version's live rows as a build source (vectors in the user's space as .fvecs blobs under one prefix;
    /// ids and attributes as JSON lines, with the schema declared) and returns the rebuild job that reads it, with the base
    /// version's build options. A repeated write of the same base writes the same bytes.
    /// </summary>
    private static async Task<BuildJob> WriteSourceAsync(IndexStore store, OpenedIndex opened, (int P, int Pos)[] order, RebuildRecord record, CancellationToken ct)
    {
        var m = opened.Manifest;
        int dims = m.Dimensions, d = m.InternalDimensions;
        var prefix = RebuildSourcePrefix(store.Name, m.Version);
        int record4 = VectorSourceFormat.FvecsRecordBytes(dims);
        for (int first = 0, blob = 0; first < order.Length; first += SnapshotBlobRows, blob++)
        {
            int n = Math.Min(SnapshotBlobRows, order.Length - first);
            var bytes = new byte[(long)n * record4];
            for (int i = 0; i < n; i++)
            {
                var (p, pos) = order[first + i];
                // Stored rows are in the internal space: its first coordinates are the user's vector (cosine: normalised, the same direction).
                VectorSourceFormat.WriteFvecsRecord(bytes.AsSpan(i * record4), opened.Vectors(p).Data.AsSpan(pos * d, dims));
            }
            await store.Blobs.WriteAsync($"{prefix}vectors/v{blob:D5}.fvecs", bytes, WriteCondition.Overwrite, ct).ConfigureAwait(false);
        }
        var blobs = await BlobVectorSource.ResolveAsync(store.Blobs, prefix + "vectors", ct).ConfigureAwait(false);

        BuildAttributesBlob? attributesBlob = null;
        string? schema = null;
        if (m.Attributes is { } info)
        {
            var name = prefix + "attributes.jsonl";
            var written = await store.Blobs.WriteAsync(name, AttributeLines(opened, info, order), WriteCondition.Overwrite, ct).ConfigureAwait(false);
            attributesBlob = new BuildAttributesBlob(name, written.ETag, written.Length);
            if (info.Attributes.Count > 0) schema = string.Join(',', info.Attributes.Select(a => $"{a.Name}:{AttributeSchema.TypeName(a.Type)}"));
        }
        // An index calibrated on the user's queries and filter families is rebuilt calibrated on them.
        BuildSourceBlob? queriesBlob = null;
        List<BuildAttributesBlob>? filterBlobs = null;
        if (m.Calibration?.QueriesBlob is { } keptQueries)
        {
            var name = prefix + RecallCalibration.QueriesBlobName;
            await store.Blobs.WriteAsync(name, await KeptCalibrationQueries.ReadBlobAsync(store, m, keptQueries, ct).ConfigureAwait(false), WriteCondition.Overwrite, ct).ConfigureAwait(false);
            queriesBlob = await BlobVectorSource.ResolveOneAsync(store.Blobs, name, "calibration queries", ct).ConfigureAwait(false);
            foreach (var kept in m.Calibration.FilterBlobs ?? [])
            {
                var written = await store.Blobs.WriteAsync(prefix + kept.Name, await KeptCalibrationQueries.ReadBlobAsync(store, m, kept, ct).ConfigureAwait(false),
                    WriteCondition.Overwrite, ct).ConfigureAwait(false);
                (filterBlobs ??= []).Add(new BuildAttributesBlob(prefix + kept.Name, written.ETag, written.Length));
            }
        }
        int chunkRows = (int)Math.Max(1, (32L << 20) / (dims * 4L)); // the API's default chunk (BuildSubmission.DefaultChunkBytes)
        int target = m.Build.PartitionTarget > 0 ? m.Build.PartitionTarget : (int)Math.Max(1, m.Count / Math.Max(1, m.Build.Partitions));
        int partitions = (int)Math.Clamp((long)Math.Round(m.Count / (double)target), 1, Math.Max(1, m.Count));
        var job = new BuildJob
        {
            BuildId = record.BuildId, Index = store.Name, Status = BuildStatus.Queued, CreatedUtc = record.SubmittedUtc, Version = record.Version,
            Source = new BuildSourceSpec { Vectors = prefix + "vectors", Attributes = attributesBlob?.Name, Schema = schema, CalibrationQueries = queriesBlob?.Name,
                CalibrationFilters = filterBlobs?.Select(f => f.Name).ToArray() },
            Options = new BuildJobOptions
            {
                Metric = m.Metric, Partitions = partitions, BitsPerDim = m.Build.BitsPerDimension, MaxBits = m.Build.MaxBitsPerDimension,
                Energy = m.Build.EnergyKept, Seed = m.Build.Seed, Calibrate = m.Calibration is not null,
            },
            Blobs = blobs, AttributesBlob = attributesBlob, CalibrationQueriesBlob = queriesBlob, CalibrationFilterBlobs = filterBlobs, Count = order.Length, Dimensions = dims, ChunkRows = chunkRows, Partitions = partitions,
            Stages = [],
            Rebuild = new RebuildOf(m.Version, m.IndexedSequence, m.MaxNorm),
        };
        return job with
        {
            Stages =
            [
                new StageProgress(BuildStages.Train, 0, 1), new StageProgress(BuildStages.Assign, 0, job.Chunks),
                new StageProgress(BuildStages.Encode, 0, partitions), new StageProgress(BuildStages.Publish, 0, 1),
            ],
        };
    }

    /// <summary>The live rows' ids and attributes as JSON lines (<c>{"id":…,"attributes":{…}}</c>), in <paramref name="order"/>.</summary>
    private static byte[] AttributeLines(OpenedIndex opened, IndexAttributes info, (int P, int Pos)[] order)
    {
        using var buffer = new MemoryStream();
        using var json = new Utf8JsonWriter(buffer);
        foreach (var (p, pos) in order)
        {
            var part = opened.Attributes(p)!;
            json.WriteStartObject();
            if (info.HasIds) json.WriteString("id", part.Keys![pos]);
            json.WriteStartObject("attributes");
            for (int a = 0; a < info.Attributes.Count; a++)
            {
                var def = info.Attributes[a];
                var column = part.Columns[a];
                if (!column.IsPresent(pos)) continue;
                switch (def.Type)
                {
                    case AttributeType.Number: json.WriteNumber(def.Name, column.Numbers![pos]); break;
                    case AttributeType.Integer: json.WriteNumber(def.Name, column.Integers![pos]); break;
                    case AttributeType.Bool: json.WriteBoolean(def.Name, column.Ids![pos] == 1); break;
                    case AttributeType.Category: json.WriteString(def.Name, def.Values![column.Ids![pos]]); break;
                    case AttributeType.Tags:
                        json.WriteStartArray(def.Name);
                        foreach (int t in column.Tags(pos)) json.WriteStringValue(def.Values![t]);
                        json.WriteEndArray();
                        break;
                }
            }
            json.WriteEndObject();
            json.WriteEndObject();
            json.Flush();
            buffer.WriteByte((byte)'\n');
            json.Reset(buffer); // one root object per line
        }
        return buffer.ToArray();
    }
}
