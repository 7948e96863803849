using System.Globalization;
using System.Text.Json;
using Squash.Core;
using Squash.Core.Linalg;
using Squash.Core.Partitioning;
using Squash.Core.Quantization;
using Squash.Index.Attributes;
using Squash.Index.Build.Stages;
using Squash.Index.Format;
using Squash.Index.Model;
using Squash.Search.Filters;
using Squash.Storage;
using Squash.Storage.Writes;

namespace Squash.Search.Writes;

/// <summary>A log batch an ingest run did not apply, and why (it does not fit the version: <see cref="WriteLogConflict.Misfits"/>).</summary>
public sealed record SkippedBatch(long Sequence, string Reason);

/// <summary>What one ingest run did.</summary>
/// <param name="Version">The version it wrote (null when the log had nothing past the watermark).</param>
/// <param name="Published">True when <c>current</c> names <paramref name="Version"/> (false: a newer version got there first).</param>
/// <param name="Seconds">Where the run's time went, by phase (log, read, apply, write, publish), for the ingest function's log line.</param>
/// <param name="CalibrationVersion">
/// The manifest-only version the run published after <paramref name="Version"/> with the recall calibration measured on it
/// (null when none was due, or a newer version got there first).
/// </param>
/// <param name="CalibrationFailure">Why measuring the calibration after the publish failed (the rows are published regardless).</param>
/// <param name="CalibrationDeferred">A calibration was due but more log waited: the next run (which follows at once) measures.</param>
/// <param name="DriftSplits">Of the split partitions, those split because their rows drifted from their quantizer (<see cref="LogIngest.DriftRatio"/>), not for size.</param>
/// <param name="LargestErrorRatio">The largest ratio, over those, of the carried quantizer's expected error to a fresh fit's (1 when none).</param>
/// <param name="CalibrationRequested">A calibration was due and the calibration job was asked to measure it (off this run's lease).</param>
/// <param name="CompactedPartitions">Of the touched partitions, those extended whose newest appended segments were merged into one (<see cref="LogIngest.CompactFrom"/>).</param>
public sealed record IngestResult(string? Version, bool Published, long FromSequence, long ToSequence, int Batches, int Upserts, int Deleted,
    int TouchedPartitions, int Partitions, IReadOnlyList<(string Phase, double Seconds)>? Seconds = null, int RewrittenPartitions = 0,
    string? CalibrationVersion = null, string? CalibrationFailure = null, bool CalibrationDeferred = false, int SplitPartitions = 0,
    int NewPartitions = 0, int DriftSplits = 0, double LargestErrorRatio = 1, bool CalibrationRequested = false, int CompactedPartitions = 0)
{
    /// <summary>
    /// Per phase, as <see cref="Seconds"/>: the process's CPU seconds (every thread, so other work in the process counts too)
    /// and the bytes it allocated, for measuring what a run costs (bench/writes.md).
    /// </summary>
    public IReadOnlyList<(string Phase, double CpuSeconds, long AllocatedBytes)>? Costs { get; init; }

    /// <summary>Batches the run passed over because they do not fit the version (<see cref="WriteLogConflict.Misfits"/>), with why.</summary>
    public IReadOnlyList<SkippedBatch> Skipped { get; init; } = [];

    /// <summary>"; skipped log batch 7 (upserts[0].vector has 6 dimensions; the index now has 8)", or "" when none was.</summary>
    public string SkippedSummary => string.Concat(Skipped.Select(s => $"; skipped log batch {s.Sequence} ({s.Reason})"));

    /// <summary>
    /// "19 of 60 partitions touched, 7 of them rewritten"; when some had their appended segments merged, ", 5 compacted";
    /// when partitions were split, "(7 split into 18: 71 partitions now)";
    /// when some of those splits were for drift, "(2 of them for drift: carried quantizer's error up to 1.39 × a fresh fit's)".
    /// </summary>
    public string PartitionSummary => $"{TouchedPartitions} of {Partitions - NewPartitions} partitions touched, {RewrittenPartitions} of them rewritten"
        + (CompactedPartitions == 0 ? "" : $", {CompactedPartitions} compacted")
        + (SplitPartitions == 0 ? "" : $" ({SplitPartitions} split into {SplitPartitions + NewPartitions}: {Partitions} partitions now)")
        + (DriftSplits == 0 ? "" : $" ({DriftSplits} of them for drift: carried quantizer's error up to {LargestErrorRatio:F2} × a fresh fit's)");

    /// <summary>The phases as "log 0.12 s, read 0.40 s, …", and what became of a calibration that was due.</summary>
    public string Timings => (Seconds is null ? "" : string.Join(", ", Seconds.Select(x => $"{x.Phase} {x.Seconds:F2} s")))
        + (CalibrationVersion is null ? "" : $"; calibration measured again → version {CalibrationVersion}")
        + (CalibrationFailure is null ? "" : $"; calibration not measured: {CalibrationFailure}")
        + (CalibrationDeferred ? "; calibration due, deferred: more log waits" : "")
        + (CalibrationRequested ? "; calibration due: the calibration job asked to measure it" : "");
}

/// <summary>
/// Applies the write-ahead log past the current version's watermark, in sequence order, and publishes a new version that
/// rewrites only the partitions the log touched (survivors copied, new rows appended, deleted and replaced rows left out)
/// and references the segments of every other partition in the folder they already live in. New rows go to their nearest
/// centroid and are encoded with that partition's existing KLT, widths and cells (no retraining); a value beyond the
/// partition's outer cell boundaries moves that boundary out, which keeps every stored code and keeps the cell's lower
/// bound a true bound. Attribute values the index has never seen extend the category dictionaries and widen the edge cells
/// of numbers (raw values stay for the exact recheck). The new version starts from the published one, so a run that dies
/// before its pointer moves leaves nothing behind that counts: the next run applies the same batches again. Every segment
/// a run writes goes into two packs (<see cref="SegmentPack"/>), so a run costs two segment writes however many
/// partitions it touches; a due recall calibration is measured after the publish (docs/writes.md).
/// </summary>
public static partial class LogIngest
{
    /// <summary>Batches one run applies at most (a larger backlog takes several runs, each publishing).</summary>
    public const int DefaultMaxBatches = 2_000;
    /// <summary>
    /// Codes, attributes and masks this process read or wrote: a warm ingest instance's next run reads every partition's
    /// again, and most of them are unchanged or its own (bench/writes.md: blob requests, not bytes, are a run's cost).
    /// </summary>
    public static SegmentBlobCache Segments { get; } = new(256L << 20);
    /// <summary>
    /// The same segments decoded (codes, attributes): a warm run composes each partition from them instead of unpacking
    /// every bit plane again (bench/writes.md). Sized for 10^6 × 128, whose base codes decode to ~160 MB.
    /// </summary>
    public static DecodedSegmentCache Decoded { get; } = new(512L << 20);
    /// <summary>How long an ingest holds the index's lease between renewals (a run renews it every third of this while it works, and after each version it publishes).</summary>
    public static readonly TimeSpan DefaultLease = TimeSpan.FromMinutes(2);

    /// <summary>What a triggered ingest did: nothing when another held the lease (<paramref name="Busy"/>), else one result per version it wrote.</summary>
    /// <param name="Rebuild">What the run did about the full rebuild (LogIngest.Rebuild.cs): null when nothing.</param>
    /// <param name="MorePastWatermark">
    /// The log held batches past what the run applied when it looked again after releasing the lease (written during its
    /// last round, or past its round cap): the caller triggers another run, so a trigger that found the lease busy need not
    /// come back soon.
    /// </param>
    /// <param name="Requested">The next run was asked for (MorePastWatermark, with a requestIngest callback) before the run ended.</param>
    public sealed record LeasedRun(bool Busy, IReadOnlyList<IngestResult> Rounds, RebuildReport? Rebuild = null, bool MorePastWatermark = false, bool Requested = false);

    /// <summary>
    /// Takes the index's lease (or returns <c>Busy</c> at once: the holder is applying the log), then ingests until the log is
    /// applied up to where it ended when the last round started, at most <paramref name="maxRounds"/> versions; releases it.
    /// </summary>
    /// <param name="requestCalibration">
    /// Asks the calibration job to measure a due calibration (the queue host sends it a message); null: the run measures it
    /// itself after its publish (<c>squash ingest</c>, a store without queues).
    /// </param>
    /// <param name="onRound">Told of each published round as it lands (the function logs it; its answer comes at the end).</param>
    /// <param name="requestIngest">Asks for the next run when the log moved past this one, before a due rebuild is queued.</param>
    public static async Task<LeasedRun> RunLeasedAsync(IndexStore store, WriteLog log, TimeSpan? lease = null, int maxRounds = 10,
        int maxBatches = DefaultMaxBatches, TimeProvider? clock = null, CancellationToken ct = default, RebuildSettings? rebuild = null,
        Func<CancellationToken, Task>? requestCalibration = null, Action<IngestResult>? onRound = null,
        Func<CancellationToken, Task>? requestIngest = null)
    {
        var held = await IngestLease.TryAcquireAsync(store.Blobs, log.Index, lease ?? DefaultLease, clock, ct).ConfigureAwait(false);
        if (held is null) return new LeasedRun(true, []);
        var rounds = new List<IngestResult>();
        RebuildReport? report = null;
        long? reached = null;
        // Renewed in the background as well as after each round: a round can outlast the lease (hundreds of partitions
        // rewritten at 10⁶ rows), and a lease that expires mid-round lets a second trigger redo the same round beside it.
        using var lost = CancellationTokenSource.CreateLinkedTokenSource(ct);
        using var stopKeepAlive = new CancellationTokenSource();
        var keepAlive = held.KeepAliveAsync(lost, stopKeepAlive.Token);
        try
        {
            var work = lost.Token;
            // A finished rebuild is published first (with the log past it applied), so the rounds below continue from it.
            var (adopted, adoption) = await AdoptRebuildAsync(store, log, clock, work).ConfigureAwait(false);
            report = adoption;
            if (adopted?.Version is not null) rounds.Add(adopted);
            for (int round = 0; round < maxRounds; round++)
            {
                var result = await RunAsync(store, log, maxBatches, clock, work, requestCalibration).ConfigureAwait(false);
                // A round refused because current moved indexed nothing: what waits is counted from its base's watermark.
                reached = result.Published ? result.ToSequence : result.FromSequence;
                if (result.Version is null) break;
                rounds.Add(result);
                onRound?.Invoke(result);
                if (!await held.RenewAsync(work).ConfigureAwait(false)) break; // lost it: the new holder carries on
            }
        }
        catch (OperationCanceledException) when (lost.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            // Lost the lease mid-round: the new holder starts from the published version, so stopping loses nothing.
        }
        finally
        {
            await stopKeepAlive.CancelAsync().ConfigureAwait(false);
            await keepAlive.ConfigureAwait(false);
            await held.ReleaseAsync(CancellationToken.None).ConfigureAwait(false);
        }
        // Looked at after the release: a trigger that found the lease held did so before this, so its write is seen here.
        bool more = reached is { } w && await log.LatestSequenceAsync(w, ct).ConfigureAwait(false) > w;
        if (more && requestIngest is not null) await requestIngest(ct).ConfigureAwait(false);
        // After the release, and after asking for the next run: queuing a rebuild writes its source (every live row; ~40 s at
        // 10⁶ rows on a busy Azurite), which under the lease held every write back that long. The rebuild record is claimed by
        // compare-and-swap, so two runs considering it at once queue one, and gc keeps the base version it names.
        if (rebuild is not null) report = RebuildReport.Join(report, await ConsiderRebuildAsync(store, rebuild, clock, ct).ConfigureAwait(false));
        return new LeasedRun(false, rounds, report, more, Requested: more && requestIngest is not null);
    }

    public static Task<IngestResult> RunAsync(IndexStore store, WriteLog log, int maxBatches = DefaultMaxBatches, TimeProvider? clock = null,
        CancellationToken ct = default, Func<CancellationToken, Task>? requestCalibration = null) =>
        RunAsync(store, log, maxBatches, clock, onto: null, requestCalibration, ct);

    /// <param name="onto">Null: apply the log onto the current version. Else a finished rebuild to apply the log onto instead (LogIngest.Rebuild.cs).</param>
    private static async Task<IngestResult> RunAsync(IndexStore store, WriteLog log, int maxBatches, TimeProvider? clock, Rebase? onto,
        Func<CancellationToken, Task>? requestCalibration, CancellationToken ct)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatches, 1);
        store = new IndexStore(Segments.Over(store.Blobs), store.Name) { Decoded = Decoded };
        var m = onto?.Rebuilt ?? await store.OpenCurrentAsync(ct).ConfigureAwait(false);
        long latest = await log.LatestSequenceAsync(m.IndexedSequence, ct).ConfigureAwait(false);
        if (latest <= m.IndexedSequence && onto is null) return new IngestResult(null, false, m.IndexedSequence, m.IndexedSequence, 0, 0, 0, 0, m.Partitions.Count);
        // A build from files over a log gc trimmed takes it from its oldest batch still there (WriteLog.TailStartsAfterAsync).
        long from = await log.TailStartsAfterAsync(m.IndexedSequence, ct).ConfigureAwait(false);
        // A rebuild's successor covers at least what the current version covers, or the watermark would move back.
        long to = Math.Max(Math.Min(latest, from + maxBatches), onto?.CurrentIndexed ?? 0);
        var phases = new List<(string, double)>();
        var costs = new List<(string, double, long)>();
        var phase = System.Diagnostics.Stopwatch.StartNew();
        var cpu = Environment.CpuUsage.TotalTime;
        long allocated = GC.GetTotalAllocatedBytes();
        void Lap(string name)
        {
            phases.Add((name, phase.Elapsed.TotalSeconds));
            var cpuNow = Environment.CpuUsage.TotalTime;
            long allocatedNow = GC.GetTotalAllocatedBytes();
            costs.Add((name, (cpuNow - cpu).TotalSeconds, allocatedNow - allocated));
            (cpu, allocated) = (cpuNow, allocatedNow);
            phase.Restart();
        }

        var batches = new WriteBatch?[to - from];
        await Parallel.ForEachAsync(Enumerable.Range(0, batches.Length), new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = ct }, async (i, t) =>
        {
            long s = from + 1 + i;
            var batch = await log.TryReadBatchAsync(s, t).ConfigureAwait(false)
                ?? throw new InvalidDataException($"log batch {s} ('{log.BatchName(s)}') of index '{log.Index}' is missing although a later one exists");
            batches[i] = await log.CountsAsync(batch, s, t).ConfigureAwait(false) ? batch : null;
        }).ConfigureAwait(false);
        Lap("log");

        await PrefetchPacksAsync(store, m, ct).ConfigureAwait(false);
        var routing = await store.ReadRoutingAsync(m, ct).ConfigureAwait(false);
        int partitions = m.Partitions.Count;
        var codes = new PartitionCodes[partitions];
        var vectors = new PartitionVectors?[partitions];
        var attributes = new PartitionAttributes?[partitions];
        await Parallel.ForEachAsync(Enumerable.Range(0, partitions), new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = ct }, async (p, t) =>
        {
            codes[p] = await store.ReadCodesAsync(m, m.Partitions[p], t).ConfigureAwait(false);
            if (m.Attributes is not null) attributes[p] = await store.ReadAttributesAsync(m, m.Partitions[p], t).ConfigureAwait(false);
        }).ConfigureAwait(false);

        Lap("read");
        var state = new State(m, codes, attributes);
        int upserts = 0;
        var skipped = new List<SkippedBatch>();
        bool hasIds = m.Attributes is { HasIds: true };
        for (int i = 0; i < batches.Length; i++)
        {
            var batch = batches[i];
            if (batch is null) continue;
            // A write made against a version of another shape (the write API refused it: a build of another shape was published
            // while it was made) cannot be applied; skipped whole and named, it cannot fail every later run.
            if (WriteLogConflict.Misfits(batch, m.Dimensions, hasIds) is { Count: > 0 } misfits)
            {
                skipped.Add(new SkippedBatch(from + 1 + i, string.Join("; ", misfits.Select(x => $"{x.Field} {x.Problem}"))));
                batches[i] = null;
                continue;
            }
            if (batch.DeleteWhere is { } where) state.DeleteWhere(where);
            foreach (var id in batch.Deletes ?? []) state.Delete(id);
            foreach (var u in batch.Upserts ?? []) { state.Upsert(u); upserts++; }
        }

        var space = new MetricSpace(MetricSpace.Parse(m.Metric), m.Dimensions, m.MaxNorm);
        int d = m.InternalDimensions;
        // New rows: internal vectors and nearest centroid.
        var added = state.Pending.Values.ToArray();
        var addedX = new float[(long)added.Length * d];
        var addedPartition = new int[added.Length];
        for (int i = 0; i < added.Length; i++) space.MapStored(added[i].Vector, addedX.AsSpan(i * d, d));
        // All new rows against all centroids in one blocked pass (the build's assignment kernel), not a distance call per pair.
        NearestCentroid.Assign(addedX, added.Length, d, routing.Centroids, partitions, addedPartition);
        var addedRows = state.RowNumbers(added);

        Lap("apply");
        var touched = new bool[partitions];
        for (int p = 0; p < partitions; p++) touched[p] = state.Deleted[p] is not null;
        foreach (int p in addedPartition) touched[p] = true;

        var version = NewerVersion(onto is null || VersionIds.Compare(m.Version, onto.CurrentVersion) > 0 ? m.Version : onto.CurrentVersion, clock);
        var sink = store.CreateSink(version);
        var schema = m.Attributes is null ? null : new SchemaGrowth(m.Attributes);
        var entries = new List<PartitionEntry>(m.Partitions);
        var radii = new List<float>(routing.Radii);
        var sizes = new List<int>(routing.PartitionSizes);
        var centroids = new List<float>(routing.Centroids);
        // Value centroids stay with the partition they describe (rows ingested into it leave them slightly stale); a split's
        // parts have none, and their filtered ranking falls back to the partition centroid.
        var valueKeep = Enumerable.Range(0, partitions).ToList();
        int rewrites = 0, compactions = 0, splits = 0, newPartitions = 0, driftSplits = 0;
        double maxDrift = 1;
        long moved = 0;
        IndexManifest manifest;
        IndexStore.PublishResult published;
        bool calibrationDue;
        try
        {
            // What each touched partition needs read first: its raw vectors when it is rewritten, its mask when it is extended.
            var mineOf = new int[partitions][];
            var rewrite = new bool[partitions];
            // Per partition, the first appended segment this run merges (compaction), or their count when it merges none.
            var mergeFrom = new int[partitions];
            var masks = new bool[]?[partitions];
            var byPartition = addedPartition.Select((q, i) => (q, i)).ToLookup(x => x.q, x => x.i);
            var pressure = new double[partitions];
            for (int p = 0; p < partitions; p++)
            {
                if (!touched[p]) continue;
                mineOf[p] = byPartition[p].ToArray();
                int removed = state.Deleted[p]?.Count(x => x) ?? 0;
                pressure[p] = RewritePressure(m.Partitions[p], removed, mineOf[p].Length);
                // A partition that will be split is rewritten first (the split starts from its rows in one piece).
                if (ShouldSplit(m, (long)m.Partitions[p].Count - removed + mineOf[p].Length)) pressure[p] = double.PositiveInfinity;
            }
            var thresholds = Enumerable.Range(0, partitions).Select(p => RewriteThreshold(m, p)).ToArray();
            foreach (int p in ChooseRewrites(pressure, thresholds, RewriteBudget(partitions))) rewrite[p] = true;
            for (int p = 0; p < partitions; p++)
            {
                if (!touched[p]) continue;
                var segments = m.Partitions[p].Appended?.Select(a => a.Count).ToArray() ?? [];
                mergeFrom[p] = rewrite[p] ? segments.Length : CompactFrom(segments, mineOf[p].Length);
            }
            // The raw vectors of the segments a compaction merges: ranges of earlier runs' vector packs, read together.
            var mergedParts = Enumerable.Range(0, partitions).Where(p => touched[p] && !rewrite[p])
                .SelectMany(p => m.Partitions[p].Appended?.Skip(mergeFrom[p]).Select(a => (P: p, Entry: a.EntryOf(m.Partitions[p]))) ?? []).ToArray();
            // Raw vectors fetched together (IndexStore.PrefetchedAsync): the appended rows of a run's partitions lie side by side
            // in the vector packs of the runs before, so a few requests per pack, not one per segment. Masks are read one by
            // one: they sit in index packs, which a warm instance holds (SegmentBlobCache) and answers from memory.
            var wanted = Enumerable.Range(0, partitions).Where(p => touched[p] && rewrite[p])
                .SelectMany(p => m.Partitions[p].VectorSegments())
                .Concat(mergedParts.Select(x => x.Entry.Vectors));
            var ahead = await store.PrefetchedAsync(m, wanted, ct).ConfigureAwait(false);
            await Parallel.ForEachAsync(Enumerable.Range(0, partitions).Where(p => touched[p]), new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = ct }, async (p, t) =>
            {
                if (rewrite[p]) vectors[p] = await ahead.ReadVectorsAsync(m, m.Partitions[p], t).ConfigureAwait(false);
                else masks[p] = await store.ReadDeletionMaskAsync(m, m.Partitions[p], t).ConfigureAwait(false);
            }).ConfigureAwait(false);
            var mergedVectors = await Task.WhenAll(mergedParts.Select(x => ahead.ReadVectorsAsync(m, x.Entry, ct))).ConfigureAwait(false);
            var merged = mergedParts.Select((x, i) => (x.P, Vectors: mergedVectors[i])).ToLookup(x => x.P, x => x.Vectors);
            Lap("read touched");

            // The new rows' codes first, on every core: each partition's depend only on its own quantizer and rows (the
            // projections are most of the encoding's arithmetic), unlike the attribute dictionaries the loop below grows.
            var encodedNew = new Encoded?[partitions];
            var grownRadii = radii.ToArray();
            Parallel.For(0, partitions, new ParallelOptions { CancellationToken = ct }, p =>
            {
                if (touched[p]) encodedNew[p] = EncodeNew(m, routing, p, codes[p], mineOf[p], addedX, ref grownRadii[p]);
            });

            // Encoding runs in partition order (the attribute dictionaries grow as it goes). Every new segment goes into one of
            // two packs, written after it: two blob requests per run, not ~3 per touched partition (bench/writes.md).
            var packs = new Packs(new SegmentPack(SegmentPack.IndexName), new SegmentPack(SegmentPack.VectorsName));
            for (int p = 0; p < partitions; p++)
            {
                var entry = m.Partitions[p];
                if (!touched[p])
                {
                    entries[p] = Referenced(entry, m);
                    continue;
                }
                ct.ThrowIfCancellationRequested();
                var mine = mineOf[p];
                var encoded = encodedNew[p]!;
                encodedNew[p] = null;
                radii[p] = grownRadii[p];
                var deleted = state.Deleted[p];
                if (rewrite[p])
                {
                    var rewritten = Rewrite(m, codes[p], vectors[p]!, attributes[p], deleted, mine, encoded, added, addedX, addedRows, schema);
                    vectors[p] = null;
                    // Too large, or holding rows its quantizer no longer fits (a second mode has grown in it): split. A fresh
                    // quantizer alone would leave the routing centroid between the modes, where it ranks both late.
                    // Only a partition of the target size or more is split for drift: its parts are then at least about half
                    // the target, and small partitions, whose fresh fits flatter themselves most, are not split again and again.
                    bool tooLarge = ShouldSplit(m, rewritten.Codes.Count);
                    var drift = tooLarge || rewritten.Codes.Count < PartitionTarget(m) ? null : CheckDrift(m, routing, entry, rewritten);
                    if (tooLarge || drift is { Drifted: true })
                    {
                        var parts = Split(m, routing, rewritten, entries.Count, m.Attributes);
                        entries[p] = Whole(entry, parts[0].Rows, packs) with { FitError = parts[0].Rows.Codes.ExpectedError() };
                        parts[0].Centroid.CopyTo(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(centroids).Slice(p * d, d));
                        valueKeep[p] = -1;
                        radii[p] = parts[0].Radius;
                        foreach (var part in parts.Skip(1))
                        {
                            entries.Add(Whole(entry with { Id = entries.Count }, part.Rows, packs) with { FitError = part.Rows.Codes.ExpectedError() });
                            centroids.AddRange(part.Centroid);
                            radii.Add(part.Radius);
                            sizes.Add(part.Rows.Codes.Count);
                            valueKeep.Add(-1);
                        }
                        splits++;
                        newPartitions += parts.Length - 1;
                        moved += rewritten.Codes.Count;
                        if (drift is not null) { driftSplits++; maxDrift = Math.Max(maxDrift, drift.Ratio); }
                    }
                    else entries[p] = Whole(entry, rewritten, packs) with { FitError = drift?.FitError ?? entry.FitError };
                    rewrites++;
                }
                else
                {
                    entries[p] = Append(m, entry, codes[p], attributes[p], masks[p], deleted, mine, encoded, added, addedX, addedRows, schema, packs,
                        mergeFrom[p], merged[p].ToArray());
                    if (mergeFrom[p] < (entry.Appended?.Count ?? 0)) compactions++;
                }
                sizes[p] = entries[p].Count;
            }
            var routingRef = packs.Index.Add(new RoutingData
            {
                GlobalTransform = routing.GlobalTransform, Centroids = [.. centroids], Radii = [.. radii], PartitionSizes = [.. sizes],
                ValueCentroids = [.. routing.ValueCentroids.Select(v => v.Carried(valueKeep, d))],
            }.ToSegment());
            Lap("encode");
            await Task.WhenAll(new[] { packs.Index, packs.Vectors }.Where(pack => pack.Count > 0)
                .Select(pack => sink.WriteAsync(pack.Name, pack.ToBytes(), ct))).ConfigureAwait(false);
            Lap("write");
            manifest = m with
            {
                Version = version,
                CreatedUtc = (clock ?? TimeProvider.System).GetUtcNow(),
                Count = entries.Sum(e => (long)e.Count),
                Routing = routingRef,
                Partitions = entries,
                Build = m.Build with { PartitionTarget = PartitionTarget(m) },
                Attributes = schema?.Result() ?? m.Attributes,
                IndexedSequence = to,
                NextRow = state.NextRow,
                // Appended codes are written without the quantizer (PartitionCodes.ToAppendedSegment): a version holding them is format 4.
                FormatVersion = entries.Any(e => e.Appended is not null) ? IndexManifest.LeanAppendedFormatVersion : IndexManifest.FormatVersionFor(routingRef, entries),
            };
            // Rows changed: the larger of rows written and rows removed (a replacement is one change, not two).
            // A split re-encodes and moves its rows (new quantizers, new partitions): they count as changed too.
            long changed = Math.Max(addedRows.Length, state.DeletedCount) + moved;
            // The rebuild trigger counts the writes only: rows a split moved were fitted afresh, the very thing a rebuild would do.
            long written = Math.Max(addedRows.Length, state.DeletedCount);
            (manifest, calibrationDue) = Counted(manifest with { RowsChangedSinceBuild = m.RowsChangedSinceBuild + written, BuiltFrom = m.Lineage }, changed);
            // Onto a rebuild: only over the version the run read (compare-and-swap), so no newer version is ever replaced.
            // Otherwise onto the current version, or on top of a calibration the calibration job published meanwhile.
            if (onto is null) (published, manifest, calibrationDue) = await PublishRebasingAsync(store, sink, manifest, m, calibrationDue, clock, ct).ConfigureAwait(false);
            else published = await store.PublishIfCurrentAsync(sink, manifest, onto.CurrentVersion, ct).ConfigureAwait(false);
            Lap("publish");
        }
        catch (Exception) when (!ct.IsCancellationRequested)
        {
            // Nothing of this version was published; what it wrote is ours to remove (gc would, later).
            try { await sink.DeleteWrittenAsync(CancellationToken.None).ConfigureAwait(false); } catch (Exception) { /* gc removes it */ }
            throw;
        }

        // The rows are visible now. A due calibration (seconds: every raw vector read, exact neighbours) is measured by the
        // calibration job under its own lease when there is one to ask, so it holds back neither these rows nor the next run.
        string? calibrationVersion = null, calibrationFailure = null;
        bool deferred = false, requested = false;
        if (published.Published && calibrationDue && requestCalibration is not null)
        {
            try
            {
                await requestCalibration(ct).ConfigureAwait(false);
                requested = true;
            }
            catch (Exception e) when (!ct.IsCancellationRequested)
            {
                calibrationFailure = $"could not ask the calibration job: {e.Message}"; // still due: the next run asks again
            }
        }
        else if (published.Published && calibrationDue)
        {
            // Measured here, after the publish: while more log waits, the next run follows at once and measuring now would hold
            // it back, so the calibration stays due (the count only grows) until the log is drained, or until the changes reach
            // IngestRecalibration.MeasureAtOnceShare, so that a steady stream of writes cannot keep it from ever being measured.
            if (manifest.Calibration!.RowsChangedSince < IngestRecalibration.MeasureAtOnceShare * manifest.Count)
                deferred = await log.LatestSequenceAsync(to, ct).ConfigureAwait(false) > to;
            if (!deferred)
            {
                try
                {
                    var run = await CalibrateVersionAsync(store, manifest, clock, ct).ConfigureAwait(false);
                    calibrationVersion = run.PublishedVersion;
                }
                catch (Exception e) when (!ct.IsCancellationRequested && e is not OutOfMemoryException)
                {
                    calibrationFailure = e.Message; // the counted calibration stays due: the next run measures
                }
                Lap("calibrate");
            }
        }
        return new IngestResult(manifest.Version, published.Published, from, to, batches.Count(b => b is not null), upserts, state.DeletedCount,
            touched.Count(t => t), entries.Count, phases, rewrites, calibrationVersion, calibrationFailure, deferred, splits, newPartitions, driftSplits, maxDrift, requested,
            compactions) { Costs = costs, Skipped = skipped };
    }

    /// <summary>Ranges of one index pack past which a run reads the whole pack first (<see cref="PrefetchPacksAsync"/>).</summary>
    private const int PrefetchRanges = 16;

    /// <summary>
    /// On an instance that has not read them yet, reads whole every index pack that the version's partitions name many ranges
    /// of, into <see cref="Segments"/>: a run's pack holds the appended codes and masks of every partition it touched, and
    /// one request for it answers the ~10^3 ranged reads the run would send to it (bench/writes.md: "read" on a cold instance).
    /// A pack the cache would not keep is left to its ranged reads.
    /// </summary>
    private static async Task PrefetchPacksAsync(IndexStore store, IndexManifest m, CancellationToken ct)
    {
        var packs = IndexStore.BlobsNamedBy(m).Where(s => s.Offset is not null && s.Name == SegmentPack.IndexName)
            .GroupBy(s => store.BlobName(m, s)).Where(g => g.Count() >= PrefetchRanges && g.Sum(s => s.Bytes) <= Segments.MaxBlobBytes)
            .Select(g => g.Key).Where(name => !Segments.Holds(store.Blobs, name)).ToArray();
        await Parallel.ForEachAsync(packs, new ParallelOptions { MaxDegreeOfParallelism = 4, CancellationToken = ct }, async (name, t) =>
        {
            if (await store.Blobs.GetInfoAsync(name, t).ConfigureAwait(false) is { } info && info.Length <= Segments.MaxBlobBytes)
                await store.Blobs.ReadAllAsync(name, t).ConfigureAwait(false);
        }).ConfigureAwait(false);
    }

    /// <summary>The entry of a partition written whole (no appended segments, no mask) from <paramref name="rows"/>, into the packs.</summary>
    private static PartitionEntry Whole(PartitionEntry entry, Rewritten rows, Packs packs) => entry with
    {
        Count = rows.Codes.Count,
        CodedDimensions = rows.Codes.CodedDimensions,
        BitsPerVector = rows.Codes.BitsPerVector,
        Codes = packs.Index.Add(rows.Codes.ToSegment()),
        Vectors = packs.Vectors.Add(rows.Vectors.ToSegment()),
        Attributes = rows.Attributes is null ? null : packs.Index.Add(rows.Attributes.ToSegment()),
        AttributeStats = rows.Attributes?.Statistics() ?? entry.AttributeStats,
        Appended = null, Deleted = null, BaseCount = null,
    };

    private static SegmentRef Referenced(SegmentRef s, IndexManifest m) => s with { Version = s.Version ?? m.Version };

    /// <summary>The entry with every segment it names (base, appended, mask) referenced in the folder it lives in.</summary>
    private static PartitionEntry Referenced(PartitionEntry e, IndexManifest m) => e with
    {
        Codes = Referenced(e.Codes, m), Vectors = Referenced(e.Vectors, m), Attributes = e.Attributes is null ? null : Referenced(e.Attributes, m),
        Appended = e.Appended?.Select(a => a with
        {
            Codes = Referenced(a.Codes, m), Vectors = Referenced(a.Vectors, m), Attributes = a.Attributes is null ? null : Referenced(a.Attributes, m),
        }).ToArray(),
        Deleted = e.Deleted is null ? null : Referenced(e.Deleted, m),
    };

    /// <summary>
    /// Appended segments a partition may carry (reads compose one segment or a few). A run that would pass it merges the
    /// newest of them into one (<see cref="CompactFrom"/>) instead of rewriting the partition.
    /// </summary>
    public const int MaxAppendedSegments = 8;

    /// <summary>
    /// How far a touched partition has moved from its base: the larger of its appended rows and its masked rows (this run's
    /// included) over its base rows. Past its <see cref="RewriteThreshold"/> it is due to be rewritten whole (reads pay for too many
    /// rows that are not the base's, and the rewrite costs about what the partition holds anyway). Too many appended segments
    /// alone is not a reason: those are compacted (<see cref="CompactFrom"/>), which reads and writes only the appended rows.
    /// </summary>
    private static double RewritePressure(PartitionEntry entry, int removed, int appended)
    {
        int appendedRows = (entry.Appended?.Sum(a => a.Count) ?? 0) + appended;
        int masked = entry.StoredRows - entry.Count + removed;
        return (double)Math.Max(appendedRows, masked) / Math.Max(1, entry.BaseRows);
    }

    /// <summary>The mean share of its base rows past which a partition is due to be rewritten (<see cref="RewriteThreshold"/>).</summary>
    public const double RewriteShare = 0.5;

    /// <summary>
    /// The share of its base rows past which partition <paramref name="p"/> of <paramref name="m"/> is due to be rewritten:
    /// <see cref="RewriteShare"/> times a factor in [0.5, 1.5) drawn from a hash of where its base codes live (the same on every
    /// instance and in every run; new once it is rewritten). With one share for all, uniform writes bring every partition to
    /// it within a few runs of each other, and the budgeted wave of rewrites that follows holds runs long for minutes and
    /// comes back each time the partitions reach the share again; spread shares spread the rewrites over time, at the rate
    /// the writes need, with the same mean.
    /// </summary>
    public static double RewriteThreshold(IndexManifest m, int p) => RewriteThreshold(m.Partitions[p].Codes, m.Version, p);

    /// <param name="codes">The partition's base codes segment.</param>
    /// <param name="manifestVersion">The version of the manifest naming it (where a segment without a version lives).</param>
    /// <param name="p">The partition's number.</param>
    public static double RewriteThreshold(SegmentRef codes, string manifestVersion, int p)
    {
        var key = System.Text.Encoding.UTF8.GetBytes($"{codes.Version ?? manifestVersion}/{codes.Name}@{codes.Offset}#{p}");
        return RewriteShare * (0.5 + HashDraw.UnitInterval(System.IO.Hashing.XxHash3.HashToUInt64(key)));
    }

    /// <summary>The share past which a due partition is rewritten whatever the run's budget.</summary>
    public const double ForcedRewriteShare = 1.0;

    /// <summary>
    /// Due rewrites a run takes on (a 32nd of the partitions, at least 8): writes that bring many partitions past their
    /// thresholds within a few runs (a burst, or a run that waited long) would otherwise stall the index for the time of
    /// rewriting all of them. The rest append (and compact) until a later run's budget reaches them.
    /// </summary>
    public static int RewriteBudget(int partitions) => Math.Max(8, partitions / 32);

    /// <summary>
    /// The partitions a run rewrites whole, given each one's <see cref="RewritePressure"/> (0 for untouched ones; infinity
    /// for one that must be split) and its <see cref="RewriteThreshold"/>: every one past <see cref="ForcedRewriteShare"/>,
    /// and of those past their threshold the <paramref name="budget"/> furthest past it (pressure over threshold; ties to the
    /// lower partition number).
    /// </summary>
    public static int[] ChooseRewrites(IReadOnlyList<double> pressure, IReadOnlyList<double> thresholds, int budget)
    {
        ArgumentNullException.ThrowIfNull(pressure);
        ArgumentNullException.ThrowIfNull(thresholds);
        ArgumentOutOfRangeException.ThrowIfNegative(budget);
        if (thresholds.Count != pressure.Count) throw new ArgumentException($"{thresholds.Count} thresholds for {pressure.Count} partitions", nameof(thresholds));
        var forced = new List<int>();
        var due = new List<int>();
        for (int p = 0; p < pressure.Count; p++)
        {
            if (pressure[p] > ForcedRewriteShare) forced.Add(p);
            else if (pressure[p] > thresholds[p]) due.Add(p);
        }
        double Over(int p) => pressure[p] / thresholds[p];
        due.Sort((a, b) => Over(b) != Over(a) ? Over(b).CompareTo(Over(a)) : a.CompareTo(b));
        return [.. forced.Concat(due.Take(budget)).Order()];
    }

    /// <summary>
    /// The first of a partition's appended segments (stored rows each, oldest first) that a run adding <paramref name="added"/>
    /// rows merges, with those rows, into one appended segment: <paramref name="segments"/>.Count when the run appends a
    /// segment without merging (it stays within <paramref name="limit"/>). Size-tiered, as an LSM tree's levels: the merge
    /// takes the newest segment it must to get back within the limit, then each older neighbour up to twice what it holds so
    /// far, so a large old segment stays put while the small new ones merge, a merged row lands in a segment at least 1.5
    /// times its old one (copied a few times, not once per run), and a merge leaves room for several runs before the next.
    /// </summary>
    public static int CompactFrom(IReadOnlyList<int> segments, int added, int limit = MaxAppendedSegments)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        int n = segments.Count;
        if (n + (added > 0 ? 1 : 0) <= limit) return n;
        long merged = added;
        int from = n;
        // Forced: after the merge, the segments before it and the merged one fit the limit.
        while (from > limit - 1) merged += segments[--from];
        while (from > 0 && segments[from - 1] <= 2 * merged) merged += segments[--from];
        return from;
    }

    /// <summary>The two blobs a run writes its segments into: codes, attributes, masks and routing; raw vectors.</summary>
    private sealed record Packs(SegmentPack Index, SegmentPack Vectors);

    /// <summary>
    /// Extends a partition without rewriting it: the new rows as one appended segment (codes, vectors, attributes) and the
    /// deletion mask with the removed rows set (added to <paramref name="packs"/>); the base and earlier appended segments
    /// are referenced where they are. With <paramref name="mergeFrom"/> below the count of appended segments, the segments
    /// from there on are compacted: their rows still live (masked and removed ones left out), then the new rows, become that
    /// one appended segment, in the same order, so the rows readers see are exactly those extending alone would give.
    /// </summary>
    /// <param name="merged">The raw vectors of the appended segments from <paramref name="mergeFrom"/> on, in order.</param>
    private static PartitionEntry Append(IndexManifest m, PartitionEntry entry, PartitionCodes live, PartitionAttributes? liveAttributes, bool[]? oldMask,
        bool[]? deleted, int[] mine, Encoded encoded, UpsertItem[] added, float[] addedX, long[] addedRows, SchemaGrowth? schema, Packs packs,
        int mergeFrom, PartitionVectors[] merged)
    {
        int d = m.InternalDimensions, k = mine.Length, md = live.CodedDimensions, words = live.SignWords;
        int removed = deleted?.Count(x => x) ?? 0;
        var old = Referenced(entry, m).Appended ?? [];
        var appended = old.Take(mergeFrom).ToList();
        int keptStored = entry.BaseRows + appended.Sum(a => a.Count);

        // One pass over the stored rows (base, then each appended segment): the new mask over the rows that stay where they
        // are, and the rows the merged segment carries over (live position in the composition, segment and row for the vector).
        var mask = new bool[keptStored];
        bool anyMasked = false;
        var keptLive = new List<int>(live.Count);
        var carried = new List<(int Live, int Segment, int Row)>();
        int liveRow = 0, stored = 0;
        for (int segment = -1; segment < old.Count; segment++)
        {
            int rows = segment < 0 ? entry.BaseRows : old[segment].Count;
            for (int r = 0; r < rows; r++, stored++)
            {
                bool gone = oldMask?[stored] ?? false;
                int at = -1;
                if (!gone)
                {
                    at = liveRow++;
                    gone = deleted?[at] ?? false;
                }
                if (stored < keptStored)
                {
                    mask[stored] = gone;
                    anyMasked |= gone;
                    if (!gone) keptLive.Add(at);
                }
                else if (!gone) carried.Add((at, segment - mergeFrom, r));
            }
        }
        if (liveRow != live.Count) throw new InvalidDataException($"partition {entry.Id}: its mask leaves {liveRow} rows, its codes hold {live.Count}");

        PartitionAttributes? newAttributes = null;
        int c = carried.Count, n = c + k;
        if (n > 0)
        {
            var ids = new int[n];
            var raw = new float[(long)n * d];
            var cells = new byte[(long)n * md];
            var signs = new ulong[(long)n * words];
            var residual = new float[n];
            for (int i = 0; i < c; i++)
            {
                var (at, segment, row) = carried[i];
                ids[i] = live.Ids[at];
                live.Cells.AsSpan(at * md, md).CopyTo(cells.AsSpan(i * md, md));
                live.Signs.AsSpan(at * words, words).CopyTo(signs.AsSpan(i * words, words));
                residual[i] = live.ResidualNorms[at];
                merged[segment].Row(row).CopyTo(raw.AsSpan(i * d, d));
            }
            for (int j = 0; j < k; j++)
            {
                ids[c + j] = checked((int)addedRows[mine[j]]);
                addedX.AsSpan(mine[j] * d, d).CopyTo(raw.AsSpan((c + j) * d, d));
            }
            encoded.Cells.CopyTo(cells.AsSpan(c * md));
            encoded.Signs.CopyTo(signs.AsSpan(c * words));
            encoded.ResidualNorms.CopyTo(residual.AsSpan(c));
            // The widest outer boundaries yet (this run's): they hold for every row of the partition.
            var codes = new PartitionCodes
            {
                Id = live.Id, Count = n, GlobalDimensions = live.GlobalDimensions, CodedDimensions = md, Mean = live.Mean, Rotation = live.Rotation,
                Eigenvalues = live.Eigenvalues, Widths = live.Widths, Boundaries = encoded.Boundaries, BoundaryOffsets = live.BoundaryOffsets, Signs = signs,
                SignWords = words, Cells = cells, ResidualNorms = residual, Ids = ids,
            };
            var codesRef = packs.Index.Add(codes.ToAppendedSegment());
            var vectorsRef = packs.Vectors.Add(new PartitionVectors { Count = n, Dimensions = d, Data = raw }.ToSegment());
            SegmentRef? attributeRef = null;
            if (liveAttributes is not null && schema is not null)
            {
                newAttributes = schema.Encode(liveAttributes, carried.Select(x => (x.Live, (UpsertItem?)null)).Concat(mine.Select(j => (-1, (UpsertItem?)added[j]))).ToArray());
                attributeRef = packs.Index.Add(newAttributes.ToSegment());
            }
            appended.Add(new AppendedRows { Count = n, Codes = codesRef, Vectors = vectorsRef, Attributes = attributeRef });
        }

        // The mask covers every stored row; the merged (or new) segment's rows are all live. No masked row left: no mask.
        SegmentRef? maskRef = null;
        if (anyMasked)
        {
            var full = new bool[keptStored + n];
            mask.CopyTo(full, 0);
            maskRef = packs.Index.Add(PartitionComposition.MaskToSegment(full));
        }

        IReadOnlyList<AttributeStats>? stats = entry.AttributeStats;
        if (liveAttributes is not null)
        {
            // The planner's counts over what readers will see: the live rows that stay where they are, then the appended segment's.
            var rows = new List<(int, int)>(keptLive.Count + n);
            foreach (int at in keptLive) rows.Add((0, at));
            for (int j = 0; j < n; j++) rows.Add((1, j));
            var parts = newAttributes is null ? new[] { liveAttributes } : new[] { liveAttributes, newAttributes };
            stats = PartitionAttributes.Gather(m.Attributes!, parts, rows).Statistics();
        }
        return entry with
        {
            Count = live.Count - removed + k,
            Codes = Referenced(entry.Codes, m), Vectors = Referenced(entry.Vectors, m), Attributes = entry.Attributes is null ? null : Referenced(entry.Attributes, m),
            Appended = appended.Count == 0 ? null : appended,
            Deleted = maskRef,
            BaseCount = appended.Count == 0 && maskRef is null ? null : entry.BaseRows,
            AttributeStats = stats,
        };
    }

    /// <summary>
    /// The new version's calibration: the old one with this run's changes counted, and whether it is due to be measured
    /// again (the changes since the last measurement reach <see cref="IngestRecalibration.DefaultShare"/> of the rows).
    /// </summary>
    private static (IndexManifest Manifest, bool Due) Counted(IndexManifest manifest, long changed)
    {
        if (manifest.Calibration is not { } old) return (manifest, false);
        long since = old.RowsChangedSince + changed;
        return (manifest with { Calibration = old with { RowsChangedSince = since } }, since >= IngestRecalibration.DefaultShare * manifest.Count);
    }

    /// <summary>
    /// A fresh version id newer than <paramref name="based"/> even when this machine's clock is behind the one that wrote it:
    /// the pointer moves forward in id order only, so an older id would never publish.
    /// </summary>
    private static string NewerVersion(string based, TimeProvider? clock)
    {
        var now = (clock ?? TimeProvider.System).GetUtcNow();
        if (VersionIds.StartedUtc(based) is { } at && at.AddMilliseconds(1) > now) now = at.AddMilliseconds(1);
        return VersionIds.New(now);
    }

    private sealed record Rewritten(PartitionCodes Codes, PartitionVectors Vectors, PartitionAttributes? Attributes);

    /// <summary>New rows encoded with a partition's quantizer; <see cref="Boundaries"/> are its cell boundaries, the outer ones widened to hold them.</summary>
    private sealed record Encoded(byte[] Cells, ulong[] Signs, float[] ResidualNorms, float[] Boundaries);

    /// <summary>
    /// Encodes the partition's new rows with its KLT, widths and cells; a coordinate beyond an outer cell boundary moves that
    /// boundary out (every stored code stays valid and each cell's lower bound a true bound). Grows the partition's radius to reach them.
    /// </summary>
    private static Encoded EncodeNew(IndexManifest m, RoutingData routing, int p, PartitionCodes old, int[] mine, float[] addedX, ref float radius)
    {
        int d = m.InternalDimensions, gm = old.GlobalDimensions, md = old.CodedDimensions, words = old.SignWords;
        var boundaries = (float[])old.Boundaries.Clone();
        var global = routing.GlobalTransform;
        var local = Klt.FromParts(old.Mean, old.Rotation, old.Eigenvalues, gm, md);

        // Encode the new rows first (their cells can widen the outer boundaries).
        int k = mine.Length;
        var newCells = new byte[(long)k * md];
        var newSigns = new ulong[(long)k * words];
        var newResidual = new float[k];
        var y = new float[gm];
        var z = new float[Math.Max(1, md)];
        for (int j = 0; j < k; j++)
        {
            var x = addedX.AsSpan(mine[j] * d, d);
            global.Project(x, y);
            double outside = 0, inside = 0, coded = 0;
            for (int t = 0; t < d; t++) { double v = x[t] - (double)global.Mean[t]; outside += v * v; }
            foreach (float v in y) outside -= (double)v * v;
            for (int t = 0; t < gm; t++) { double v = y[t] - (double)old.Mean[t]; inside += v * v; }
            if (md > 0) local.Project(y, z);
            for (int t = 0; t < md; t++)
            {
                coded += (double)z[t] * z[t];
                int w = old.Widths[t], off = old.BoundaryOffsets[t], top = off + (1 << w);
                if (z[t] < boundaries[off]) boundaries[off] = z[t];
                if (z[t] >= boundaries[top]) boundaries[top] = MathF.BitIncrement(z[t]);
                newCells[(long)j * md + t] = (byte)LloydBoundaries.Encode(boundaries.AsSpan(off, (1 << w) + 1), z[t]);
            }
            SignCodes.Encode(z.AsSpan(0, md), newSigns.AsSpan(j * words, words));
            newResidual[j] = (float)Math.Sqrt(Math.Max(0, outside + inside - coded));
            var centroid = routing.Centroids.AsSpan(p * d, d);
            float reach = System.Numerics.Tensors.TensorPrimitives.Distance(centroid, x);
            radius = Math.Max(radius, (float)(reach * (1 + 1e-6) + 1e-6));
        }
        return new Encoded(newCells, newSigns, newResidual, boundaries);
    }

    /// <summary>One partition: its surviving rows, then the new rows encoded with its quantizer, in ascending row number.</summary>
    private static Rewritten Rewrite(IndexManifest m, PartitionCodes old, PartitionVectors oldVectors, PartitionAttributes? oldAttributes,
        bool[]? deleted, int[] mine, Encoded encoded, UpsertItem[] added, float[] addedX, long[] addedRows, SchemaGrowth? schema)
    {
        int d = m.InternalDimensions, gm = old.GlobalDimensions, md = old.CodedDimensions, words = old.SignWords;
        int k = mine.Length;
        var (newCells, newSigns, newResidual, boundaries) = encoded;

        // Rows in the new partition: (row number, old position or −1 − new index), ascending by row number.
        var order = new List<(long Row, int Source)>(old.Count + k);
        for (int i = 0; i < old.Count; i++) if (deleted is null || !deleted[i]) order.Add((old.Ids[i], i));
        for (int j = 0; j < k; j++) order.Add((addedRows[mine[j]], -1 - j));
        order.Sort((a, b) => a.Row.CompareTo(b.Row));
        int n = order.Count;

        var cells = new byte[(long)n * md];
        var signs = new ulong[(long)n * words];
        var residual = new float[n];
        var ids = new int[n];
        var raw = new float[(long)n * d];
        for (int i = 0; i < n; i++)
        {
            var (row, source) = order[i];
            ids[i] = checked((int)row);
            if (source >= 0)
            {
                old.Cells.AsSpan(source * md, md).CopyTo(cells.AsSpan(i * md, md));
                old.Signs.AsSpan(source * words, words).CopyTo(signs.AsSpan(i * words, words));
                residual[i] = old.ResidualNorms[source];
                oldVectors.Row(source).CopyTo(raw.AsSpan(i * d, d));
            }
            else
            {
                int j = -1 - source;
                newCells.AsSpan(j * md, md).CopyTo(cells.AsSpan(i * md, md));
                newSigns.AsSpan(j * words, words).CopyTo(signs.AsSpan(i * words, words));
                residual[i] = newResidual[j];
                addedX.AsSpan(mine[j] * d, d).CopyTo(raw.AsSpan(i * d, d));
            }
        }
        var codes = new PartitionCodes
        {
            Id = old.Id, Count = n, GlobalDimensions = gm, CodedDimensions = md, Mean = old.Mean, Rotation = old.Rotation, Eigenvalues = old.Eigenvalues,
            Widths = old.Widths, Boundaries = boundaries, BoundaryOffsets = old.BoundaryOffsets, Signs = signs, SignWords = words, Cells = cells,
            ResidualNorms = residual, Ids = ids,
        };
        var vectors = new PartitionVectors { Count = n, Dimensions = d, Data = raw };
        PartitionAttributes? attrs = null;
        if (oldAttributes is not null && schema is not null)
            attrs = schema.Encode(oldAttributes, order.Select(o => o.Source >= 0 ? (o.Source, (UpsertItem?)null) : (-1, added[mine[-1 - o.Source]])).ToArray());
        return new Rewritten(codes, vectors, attrs);
    }

    /// <summary>The log applied to the published rows: which rows are gone, which upserts are still live, and where ids live.</summary>
    private sealed class State
    {
        private readonly IndexManifest _m;
        private readonly PartitionCodes[] _codes;
        private readonly PartitionAttributes?[] _attributes;
        // With ids: where each id lives. Without: by row number (an id is its row number), not 10^6 strings printed and
        // hashed every run (most of the "apply" phase at 10^6 rows, bench/writes.md): arrays by row number while the numbers
        // are dense, a dictionary once an upsert named a row number far past the rows (RowPlaces), so that memory follows
        // the rows held and not the largest number written.
        private readonly Dictionary<string, (int P, int Pos)>? _where;
        private readonly RowPlaces? _places;
        private readonly FilterCompiler _filters;

        public State(IndexManifest m, PartitionCodes[] codes, PartitionAttributes?[] attributes)
        {
            _m = m;
            _codes = codes;
            _attributes = attributes;
            _filters = new FilterCompiler(m.Attributes);
            Deleted = new bool[]?[codes.Length];
            NextRow = m.RowLimit;
            if (m.Attributes is { HasIds: true })
            {
                _where = new Dictionary<string, (int P, int Pos)>(StringComparer.Ordinal);
                for (int p = 0; p < codes.Length; p++)
                {
                    var keys = attributes[p]!.Keys!;
                    for (int i = 0; i < codes[p].Count; i++)
                        if (keys[i] is { } key) _where[key] = (p, i);
                }
                return;
            }
            _places = new RowPlaces(codes.Select(c => c.Ids).ToArray());
        }

        public bool[]?[] Deleted { get; }
        public int DeletedCount { get; private set; }
        public long NextRow { get; private set; }
        /// <summary>Live upserts not yet in the index, in the order they were (last) written.</summary>
        public Dictionary<string, UpsertItem> Pending { get; } = new(StringComparer.Ordinal);

        private void Remove(int p, int pos)
        {
            var mask = Deleted[p] ??= new bool[_codes[p].Count];
            if (!mask[pos]) { mask[pos] = true; DeletedCount++; }
        }

        /// <summary>The row number an id names in an index without ids: its canonical decimal form only ("17", not "017").</summary>
        private static int RowOf(string id) =>
            int.TryParse(id, NumberStyles.None, CultureInfo.InvariantCulture, out int row) && (id.Length == 1 || id[0] != '0') ? row : -1;

        /// <summary>Takes the id's live stored row out of the map, if it has one.</summary>
        private bool TryTake(string id, out (int P, int Pos) at)
        {
            if (_where is not null) return _where.Remove(id, out at);
            int row = RowOf(id);
            if (row < 0 || !_places!.TryGet(row, out int p, out int pos)) { at = default; return false; }
            at = (p, pos);
            _places.Remove(row);
            return true;
        }

        public void Delete(string id)
        {
            Pending.Remove(id);
            if (TryTake(id, out var at)) Remove(at.P, at.Pos);
        }

        public void Upsert(UpsertItem u)
        {
            Delete(u.Id);
            Pending[u.Id] = u;
        }

        public void DeleteWhere(JsonElement where)
        {
            var filter = _filters.Compile(where);
            bool Match((int P, int Pos) at) => filter.MatchesAll || (_attributes[at.P] is { } a && filter.Matches(a, at.Pos));
            if (_where is not null)
            {
                foreach (var (id, at) in _where.ToArray())
                    if (Match(at)) { _where.Remove(id); Remove(at.P, at.Pos); }
            }
            else
            {
                _places!.RemoveWhere((p, pos) => Match((p, pos)), Remove);
            }
            foreach (var u in Pending.Values.ToArray())
                if (TailFilter.Matches(where, u.Attributes, _m.Attributes)) Pending.Remove(u.Id);
        }

        /// <summary>Row numbers for the new rows: an index without ids names a row by its number; one with ids takes fresh numbers.</summary>
        public long[] RowNumbers(UpsertItem[] added)
        {
            var rows = new long[added.Length];
            bool hasIds = _m.Attributes is { HasIds: true };
            for (int i = 0; i < added.Length; i++)
            {
                if (hasIds) rows[i] = NextRow++;
                else
                {
                    // The write API takes only row numbers as ids for such an index.
                    if (!int.TryParse(added[i].Id, NumberStyles.None, CultureInfo.InvariantCulture, out int row))
                        throw new InvalidDataException($"upsert id '{added[i].Id}' is not a row number, and the index has no ids");
                    rows[i] = row;
                    NextRow = Math.Max(NextRow, row + 1L);
                }
            }
            return rows;
        }
    }

    /// <summary>
    /// The attribute schema as the log grows it: category and tag dictionaries extended by values they lacked, number cells'
    /// min/max widened and counts raised by the values that land in them (the codes clamp to the edge cells).
    /// </summary>
    private sealed class SchemaGrowth
    {
        private readonly IndexAttributes _info;
        private readonly List<string>?[] _values;
        private readonly Dictionary<string, int>?[] _lookup;
        private readonly double[]?[] _min, _max;
        private readonly long[]?[] _counts;
        private readonly bool[] _lossy;

        public SchemaGrowth(IndexAttributes info)
        {
            _info = info;
            int a = info.Attributes.Count;
            _values = new List<string>?[a];
            _lookup = new Dictionary<string, int>?[a];
            _min = new double[]?[a];
            _max = new double[]?[a];
            _counts = new long[]?[a];
            _lossy = new bool[a];
            for (int i = 0; i < a; i++)
            {
                var def = info.Attributes[i];
                _lossy[i] = def.Lossy;
                if (def.Type is AttributeType.Category or AttributeType.Tags)
                {
                    _values[i] = [.. def.Values ?? []];
                    _lookup[i] = new Dictionary<string, int>(StringComparer.Ordinal);
                    for (int v = 0; v < _values[i]!.Count; v++) _lookup[i]![_values[i]![v]] = v;
                }
                else if (def.Type is AttributeType.Number or AttributeType.Integer)
                {
                    _min[i] = (double[])def.CellMin!.Clone();
                    _max[i] = (double[])def.CellMax!.Clone();
                    _counts[i] = (long[])def.CellCounts!.Clone();
                }
            }
        }

        public IndexAttributes Result() => _info with
        {
            Attributes = _info.Attributes.Select((def, i) => def.Type switch
            {
                AttributeType.Category or AttributeType.Tags => def with { Values = [.. _values[i]!] },
                AttributeType.Number or AttributeType.Integer => def with { CellMin = _min[i], CellMax = _max[i], CellCounts = _counts[i], Lossy = _lossy[i] },
                _ => def,
            }).ToArray(),
        };

        private int Intern(int a, string value)
        {
            if (!_lookup[a]!.TryGetValue(value, out int id))
            {
                id = _lookup[a]![value] = _values[a]!.Count;
                _values[a]!.Add(value);
            }
            return id;
        }

        private byte NumberCode(int a, double v)
        {
            var def = _info.Attributes[a];
            int c = AttributeEncoding.Encode(def.Boundaries, v);
            if (_counts[a]![c]++ == 0) { _min[a]![c] = v; _max[a]![c] = v; }
            else { _min[a]![c] = Math.Min(_min[a]![c], v); _max[a]![c] = Math.Max(_max[a]![c], v); }
            return (byte)c;
        }

        /// <summary>A partition's attributes from its surviving rows (position in <paramref name="old"/>) and new rows (JSON), in order.</summary>
        public PartitionAttributes Encode(PartitionAttributes old, (int Source, UpsertItem? Item)[] rows) => PartitionAttributes.Encode(_info, new Rows(this, old, rows));

        /// <summary>Surviving rows copied as they are; new rows' JSON values, with new dictionary values interned and number cells widened.</summary>
        private sealed class Rows(SchemaGrowth growth, PartitionAttributes old, (int Source, UpsertItem? Item)[] rows) : AttributeRowSource
        {
            public override int Count => rows.Length;
            public override (PartitionAttributes Part, int Row)? Stored(int i) => rows[i].Source >= 0 ? (old, rows[i].Source) : null;
            public override string? Key(int i) => rows[i].Item!.Id;

            private JsonElement? Value(int i, int a) =>
                rows[i].Item!.Attributes is { ValueKind: JsonValueKind.Object } o && o.TryGetProperty(growth._info.Attributes[a].Name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

            public override bool TryNumber(int i, int a, out double value)
            {
                value = Value(i, a) is { } v ? v.GetDouble() : 0;
                return Value(i, a) is not null;
            }

            public override bool TryInteger(int i, int a, out long value)
            {
                // A whole number however written (5.0 from a log the API did not write): as the filters read it.
                value = Value(i, a) is { } v ? (WholeNumber.TryRead(v, out long whole) ? whole : v.GetInt64()) : 0;
                // Beyond 2^53 the cell codes (doubles) no longer tell integers apart: the recheck must use the raw values.
                growth._lossy[a] |= Math.Abs((double)value) >= 9007199254740992d;
                return Value(i, a) is not null;
            }

            public override bool TryBool(int i, int a, out bool value)
            {
                value = Value(i, a) is { } v && v.GetBoolean();
                return Value(i, a) is not null;
            }

            public override int Category(int i, int a) => Value(i, a) is { } v ? growth.Intern(a, v.GetString()!) : -1;

            public override bool Tags(int i, int a, List<int> into)
            {
                if (Value(i, a) is not { } v) return false;
                into.AddRange(new SortedSet<int>(v.EnumerateArray().Select(t => growth.Intern(a, t.GetString()!))));
                return true;
            }

            public override byte NumberCode(int a, AttributeInfo def, double value) => growth.NumberCode(a, value);
        }
    }
}
