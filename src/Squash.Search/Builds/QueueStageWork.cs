using System.Diagnostics;
using Squash.Core;
using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.Index.Build.Stages;
using Squash.Index.Model;
using Squash.Storage;
using Squash.Storage.Builds;

namespace Squash.Search.Builds;

/// <summary>
/// The build stages as queue tasks over blobs (<see cref="IndexBuildStages"/> does the work; this class moves it in and
/// out of the store). What the stages hand each other lives under the job's work prefix:
/// <code>
/// plan.seg                 train: the fitted partitioning (and global subspace)
/// attributes.json          train: the attribute encoders (boundaries, dictionaries) and where each chunk's rows start in the attributes blob
/// queries.run              train: the calibration's held-out rows, or the user's calibration queries kept (user space)
/// runs/cCCCCCC.run         assign: chunk C's rows, one run per trained partition (ids ascending, internal space, their attributes encoded), back to back
/// runs/cCCCCCC.idx         assign: where each partition's run lies in it (<see cref="ChunkRunIndex"/>)
/// calib/cCCCCCC.seg        assign: chunk C's share of the calibration (<see cref="CalibrationPartial"/>), when calibrating
/// encode/kept.seg          start of encode: the trained partitions some row chose, in order (kept partition t = entry t)
/// encode/tTTTTTT.seg       start of encode: task T's consecutive partitions and where their runs lie (<see cref="EncodeTaskLayout"/>)
/// parts/tTTTTTT.json       encode: task T's partitions' manifest entries, centroids and radii
/// </code>
/// Memory per task: train holds the training sample (at most ~256 MB of floats) and one chunk (and, with attributes, their
/// dictionaries and at most <see cref="NumericCellFit.MaxSample"/> values per number column); assign one chunk; encode
/// its partitions' runs (about <see cref="MaxEncodeTaskBytes"/>) and one partition being encoded; publish one partition at
/// a time (the calibration, <see cref="RecallCalibrator.CalibrateByPartitionAsync"/>, filtered too) plus per-query candidate lists
/// (and, with attributes, one value per vector of each number, integer and category attribute, to draw the filters from).
/// Every blob here is a deterministic function of the job, so a repeated task rewrites the same bytes.
/// </summary>
public sealed class QueueStageWork : IBuildStageWork
{
    private const string PlanName = "plan.seg", QueriesName = "queries.run", KeptName = "encode/kept.seg", AttributesName = "attributes.json";

    /// <summary>Run bytes one encode task reads at most (unless one partition alone is larger): its memory bound.</summary>
    public const long MaxEncodeTaskBytes = 32L << 20;
    /// <summary>Encode tasks a build is split into at least (when it has that many partitions), so that this many workers share the stage.</summary>
    public const int MinEncodeTasks = 16;
    /// <summary>Ranged reads or writes one task keeps in flight.</summary>
    private const int Parallelism = 8;

    private static string RunsName(BuildTaskContext c, int chunk) => $"{c.WorkPrefix}runs/c{chunk:D6}.run";
    private static string RunIndexName(BuildTaskContext c, int chunk) => $"{c.WorkPrefix}runs/c{chunk:D6}.idx";
    private static string PartialName(BuildTaskContext c, int chunk) => $"{c.WorkPrefix}calib/c{chunk:D6}.seg";
    private static string LayoutName(BuildTaskContext c, int task) => $"{c.WorkPrefix}encode/t{task:D6}.seg";
    private static string SummaryName(BuildTaskContext c, int task) => $"{c.WorkPrefix}parts/t{task:D6}.json";

    /// <summary>
    /// Blobs every task of a build reads and nobody changes once written (the plan, the held-out rows, the attribute layout): kept by the instance
    /// for its next tasks of the same build. A few entries, so a warm instance serving several builds stays small.
    /// </summary>
    private readonly ImmutableBlobCache _cache = new(capacity: 6);

    /// <summary>The in-process build's options for this job (the same defaults as <c>squash build</c>); the held-out rows only when asked.</summary>
    public static IndexBuildOptions Options(BuildJob job, bool heldOut = true) => new()
    {
        Metric = MetricSpace.Parse(job.Options.Metric),
        Partitions = job.Options.Partitions,
        BitsPerDimension = job.Options.BitsPerDim,
        MaxBitsPerDimension = job.Options.MaxBits,
        EnergyKept = job.Options.Energy,
        Seed = job.Options.Seed,
        HeldOutRows = heldOut ? HeldOutRows(job) : null,
    };

    /// <summary>
    /// The calibration's base-sample rows, chosen as <see cref="CalibratedBuild"/> chooses them; null without calibration, or
    /// when the job calibrates on the user's queries (nothing is held out then, as in process).
    /// </summary>
    public static int[]? HeldOutRows(BuildJob job) =>
        job.Options.Calibrate && job.CalibrationQueriesBlob is null ? CalibratedBuild.CalibrationRows((int)job.Count, job.Options.Seed) : null;

    /// <summary>The user's calibration queries a job keeps: as many as the base sample would hold (what the in-process build takes).</summary>
    private static int UserQueriesKept(BuildJob job) =>
        (int)Math.Min(job.CalibrationQueriesBlob!.Rows, RecallCalibrator.BuildQueries(job.Count));

    /// <summary>Whether the build calibrates (as <see cref="CalibratedBuild"/> decides) with these held-out rows.</summary>
    private static bool Calibrates(BuildJob job, int queries) =>
        job.Options.Calibrate && queries > 0 && job.Count >= Math.Max(RecallCalibrator.MinimumVectors, 2L * RecallCalibrator.DefaultK);

    public async Task<StagePlan> PrepareStageAsync(BuildTaskContext c, string stage) => stage switch
    {
        BuildStages.Assign => new StagePlan(c.Job.Chunks),
        BuildStages.Encode => await PlanEncodeAsync(c).ConfigureAwait(false),
        _ => new StagePlan(1),
    };

    public async Task<StageResult> TrainAsync(BuildTaskContext c)
    {
        FreeMemory();
        var job = c.Job;
        var clock = new PhaseClock();
        var options = Options(job);
        try { options.Validate(job.Count, job.Dimensions); }
        catch (ArgumentException e) { throw new BuildInputException(e.Message); }
        // The attributes blob is scanned (two streaming passes: checked, encoders fitted, without holding it) while the source is
        // read: the two are independent, and train is the one task of its stage. Its errors come first, as if it ran first.
        var scan = job.AttributesBlob is null ? null : Task.Run(() => ScanAttributesAsync(c), c.CancellationToken);

        // One pass over the source, chunk by chunk: every row is checked (NaN, dimensions), the largest norm found (ip), and the
        // training and calibration rows picked out.
        int dims = job.Dimensions;
        int target = IndexBuildStages.TargetPartitions(options, job.Count, dims);
        int internalDims = new MetricSpace(options.Metric, dims).InternalDimensions;
        var trainingRows = PartitionTraining.TrainingRows((int)job.Count, internalDims, target, options.HeldOutRows);
        // Read in row order; written in the draw's order (its head is what the exact neighbours and filtered families use).
        var drawn = options.HeldOutRows ?? [];
        var held = drawn.Order().ToArray();
        var training = new float[(long)trainingRows.Length * dims];
        var queries = new float[(long)held.Length * dims];
        double maxNorm = 0;
        int nextTraining = 0, nextHeld = 0;
        var chunk = new float[(long)job.ChunkRows * dims];
        Exception? readError = null;
        try
        {
            for (long first = 0; first < job.Count; first += job.ChunkRows)
            {
                int n = (int)Math.Min(job.ChunkRows, job.Count - first);
                await BlobVectorSource.ReadRowsAsync(c.Blobs, job.Blobs, first, n, chunk, c.CancellationToken).ConfigureAwait(false);
                RequireIndexable(job.Blobs, first, chunk.AsSpan(0, n * dims), dims, options.Metric);
                if (options.Metric == Metric.InnerProduct) maxNorm = Math.Max(maxNorm, MetricSpace.MaxRowNorm(chunk.AsSpan(0, n * dims), dims));
                for (; nextTraining < trainingRows.Length && trainingRows[nextTraining] < first + n; nextTraining++)
                    Array.Copy(chunk, (trainingRows[nextTraining] - first) * dims, training, (long)nextTraining * dims, dims);
                for (; nextHeld < held.Length && held[nextHeld] < first + n; nextHeld++)
                    Array.Copy(chunk, (held[nextHeld] - first) * dims, queries, (long)nextHeld * dims, dims);
            }
        }
        catch (Exception e) when (scan is not null)
        {
            readError = e;
        }
        byte[]? layoutBytes = null;
        bool hasIds = false;
        if (scan is not null)
        {
            var layout = await scan.ConfigureAwait(false);
            hasIds = layout.Encoders.HasIds;
            if (layout.Rows != job.Count)
                throw new BuildInputException($"the attributes blob '{job.AttributesBlob!.Name}' has {layout.Rows:N0} rows but there are {job.Count:N0} vectors (rows are matched by position)");
            // Ids the write API could never name (repeated, over-long, control characters), as `squash build` refuses them.
            if (layout.IdProblem is { } idProblem) throw new BuildInputException(idProblem.Describe($"the attributes blob '{job.AttributesBlob!.Name}'"));
            layoutBytes = layout.ToJson();
        }
        if (readError is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(readError);
        chunk = [];
        // A log of writes this build could not take fails it now rather than at publish (which checks again); a rebuild's version is meant to take the log.
        if (job.Rebuild is null)
            await Squash.Storage.Writes.WriteLogConflict.ThrowIfAnyAsync(c.Index, dims, hasIds, c.CancellationToken).ConfigureAwait(false);
        // The user's calibration queries (rows checked as the source's are) and filters (each compiled against the attributes'
        // encoders, so a bad one fails the job here, naming its blob and line, rather than after the whole build).
        float[]? userQueries = null;
        if (job.Options.Calibrate && job.CalibrationQueriesBlob is { } queryBlob)
        {
            userQueries = new float[(long)UserQueriesKept(job) * dims];
            await BlobVectorSource.ReadRowsAsync(c.Blobs, [queryBlob], 0, UserQueriesKept(job), userQueries, c.CancellationToken).ConfigureAwait(false);
            RequireIndexable([queryBlob], 0, userQueries, dims, options.Metric);
            if (job.CalibrationFilterBlobs is { } filterBlobs)
            {
                if (layoutBytes is null) throw new BuildInputException("calibration filters need an attributes blob: the filters name attributes");
                var encoders = AttributeLayout.FromJson(layoutBytes, AttributesName).Encoders;
                foreach (var blob in filterBlobs)
                    if ((await ReadFilterFileAsync(c, blob).ConfigureAwait(false)).FirstError(encoders, UserQueriesKept(job)) is { } error)
                        throw new BuildInputException($"calibration filter blob '{blob.Name}' line {error.Line}: {error.Message}");
            }
        }
        clock.Lap(scan is null ? "read" : "read and attributes");
        FreeMemory();
        // A rebuild keeps its base's largest norm: the log it takes on holds writes up to it (RebuildOf.MaxNorm).
        if (options.Metric == Metric.InnerProduct && job.Rebuild is { } rebuild) maxNorm = Math.Max(maxNorm, rebuild.MaxNorm);
        var plan = IndexBuildStages.Train(training, trainingRows.Length, dims, maxNorm, target, options, null, c.CancellationToken);
        clock.Lap("fit");
        await c.ThrowIfStoppedAsync().ConfigureAwait(false);
        var planBytes = plan.ToBytes();
        await c.Blobs.WriteAsync(c.WorkPrefix + PlanName, planBytes, WriteCondition.Overwrite, c.CancellationToken).ConfigureAwait(false);
        var position = new Dictionary<int, int>(held.Length);
        for (int i = 0; i < held.Length; i++) position[held[i]] = i;
        var inDrawOrder = new float[queries.LongLength];
        for (int i = 0; i < drawn.Length; i++) Array.Copy(queries, (long)position[drawn[i]] * dims, inDrawOrder, (long)i * dims, dims);
        // The user's queries in their file's order, numbered (they are no rows of the index).
        var queryBytes = (userQueries is null ? new PartitionRun(drawn, inDrawOrder, dims)
            : new PartitionRun(Enumerable.Range(0, UserQueriesKept(job)).ToArray(), userQueries, dims)).ToBytes();
        await c.Blobs.WriteAsync(c.WorkPrefix + QueriesName, queryBytes, WriteCondition.Overwrite, c.CancellationToken).ConfigureAwait(false);
        if (layoutBytes is not null) await c.Blobs.WriteAsync(c.WorkPrefix + AttributesName, layoutBytes, WriteCondition.Overwrite, c.CancellationToken).ConfigureAwait(false);
        clock.Lap("write");
        return new StageResult(0, planBytes.LongLength + queryBytes.LongLength + (layoutBytes?.LongLength ?? 0), clock.ToString());
    }

    /// <summary>
    /// What `squash build` refuses in its input (a norm past 10^15, a zero vector under cosine) fails the job in train too,
    /// naming the blob and its row: a queue build took such rows, and their float32 distances overflow.
    /// </summary>
    private static void RequireIndexable(IReadOnlyList<BuildSourceBlob> blobs, long first, ReadOnlySpan<float> rows, int dims, Metric metric)
    {
        for (int r = 0; r < rows.Length / dims; r++)
        {
            long row = first + r;
            if (MetricSpace.RowProblem(rows.Slice(r * dims, dims), metric, 0) is null) continue;
            // Rows are numbered within their blob, as the NaN check numbers them.
            foreach (var blob in blobs)
            {
                if (row < blob.Rows) throw new InvalidDataException($"{blob.Name}: {MetricSpace.RowProblem(rows.Slice(r * dims, dims), metric, row)}");
                row -= blob.Rows;
            }
        }
    }

    public async Task<StageResult> AssignAsync(BuildTaskContext c, int chunk)
    {
        FreeMemory();
        var job = c.Job;
        var clock = new PhaseClock();
        var plan = await ReadPlanAsync(c).ConfigureAwait(false);
        long first = (long)chunk * job.ChunkRows;
        int n = (int)Math.Min(job.ChunkRows, job.Count - first), d = plan.InternalDimensions;
        var rows = new float[(long)n * job.Dimensions];
        await BlobVectorSource.ReadRowsAsync(c.Blobs, job.Blobs, first, n, rows, c.CancellationToken).ConfigureAwait(false);
        clock.Lap("read");
        var (x, labels) = IndexBuildStages.Assign(plan, rows, n);
        clock.Lap("assign");
        // The chunk's attribute rows, read by range (train noted where the chunk starts) and encoded into each run.
        AttributeTable? attributes = null;
        AttributeLayout? layout = null;
        if (job.AttributesBlob is not null)
        {
            layout = await ReadLayoutAsync(c).ConfigureAwait(false);
            attributes = await ReadAttributeChunkAsync(c, layout, chunk, first, n).ConfigureAwait(false);
            clock.Lap("attributes");
        }

        // Rows grouped by partition (ascending), each group in row order: a counting sort.
        var start = new int[plan.Partitions + 1];
        foreach (int l in labels) start[l + 1]++;
        for (int p = 0; p < plan.Partitions; p++) start[p + 1] += start[p];
        var order = new int[n];
        var fill = start[..^1].ToArray();
        for (int i = 0; i < n; i++) order[fill[labels[i]]++] = i;
        var runs = new List<(int, PartitionRun)>();
        for (int p = 0; p < plan.Partitions; p++)
        {
            int count = start[p + 1] - start[p];
            if (count == 0) continue;
            var ids = new int[count];
            var vectors = new float[(long)count * d];
            for (int j = 0; j < count; j++)
            {
                int i = order[start[p] + j];
                ids[j] = checked((int)(first + i));
                Array.Copy(x, (long)i * d, vectors, (long)j * d, d);
            }
            var attributeBytes = attributes is null ? null
                : PartitionAttributes.Encode(attributes, layout!.Encoders, order[start[p]..start[p + 1]]).ToSegment();
            runs.Add((p, new PartitionRun(ids, vectors, d, attributeBytes)));
        }
        var (runBytes, index) = ChunkRuns.Write(runs);
        runs.Clear();
        clock.Lap("runs");

        byte[]? partial = null;
        var queries = await ReadQueriesAsync(c).ConfigureAwait(false);
        if (Calibrates(job, queries.Count))
        {
            // Exact neighbours for the first ExactQueries only; the calibration measures the rest against its reference plan.
            var best = StreamingGroundTruth.BlockBest(ExactlyMeasured(queries, job), RecallCalibrator.ExactDepth, plan.Metric, rows, n, (int)first, c.CancellationToken);
            var labelIds = best.SelectMany(b => b.Select(x => x.Id)).Distinct().Order().ToArray();
            var heldIds = queries.SelfIds?.Where(r => r >= first && r < first + n).Select(r => (int)r).ToArray() ?? [];
            var stored = new float[(long)heldIds.Length * d];
            for (int i = 0; i < heldIds.Length; i++) Array.Copy(x, (heldIds[i] - first) * d, stored, (long)i * d, d);
            partial = new CalibrationPartial(best, labelIds, labelIds.Select(id => labels[(int)(id - first)]).ToArray(),
                heldIds, heldIds.Select(id => labels[(int)(id - first)]).ToArray(), stored, d).ToBytes();
            clock.Lap("exact neighbours");
        }
        await c.ThrowIfStoppedAsync().ConfigureAwait(false);
        var indexBytes = index.ToBytes();
        await c.Blobs.WriteAsync(RunsName(c, chunk), runBytes, WriteCondition.Overwrite, c.CancellationToken).ConfigureAwait(false);
        await c.Blobs.WriteAsync(RunIndexName(c, chunk), indexBytes, WriteCondition.Overwrite, c.CancellationToken).ConfigureAwait(false);
        if (partial is not null) await c.Blobs.WriteAsync(PartialName(c, chunk), partial, WriteCondition.Overwrite, c.CancellationToken).ConfigureAwait(false);
        clock.Lap("write");
        return new StageResult(n, runBytes.LongLength + indexBytes.LongLength + (partial?.LongLength ?? 0), clock.ToString());
    }

    /// <summary>
    /// Starts the encode stage: keeps the trained partitions some chunk wrote rows for (in order: kept partition t is entry t)
    /// and splits them into tasks of consecutive partitions, at most <see cref="MaxEncodeTaskBytes"/> of runs each and at
    /// least <see cref="MinEncodeTasks"/> tasks, writing each task's layout.
    /// </summary>
    private async Task<StagePlan> PlanEncodeAsync(BuildTaskContext c)
    {
        var job = c.Job;
        var plan = await ReadPlanAsync(c).ConfigureAwait(false);
        int chunks = job.Chunks;
        var indexes = new ChunkRunIndex[chunks];
        await Parallel.ForEachAsync(Enumerable.Range(0, chunks), new ParallelOptions { MaxDegreeOfParallelism = Parallelism, CancellationToken = c.CancellationToken }, async (k, ct) =>
        {
            var name = RunIndexName(c, k);
            indexes[k] = ChunkRunIndex.FromBytes(await c.Blobs.ReadAllAsync(name, ct).ConfigureAwait(false), name);
        }).ConfigureAwait(false);
        var bytes = new long[plan.Partitions];
        foreach (var index in indexes)
            for (int i = 0; i < index.Runs; i++)
            {
                if (index.Partitions[i] >= plan.Partitions) throw new Squash.Index.Format.CorruptIndexException($"a run index names partition {index.Partitions[i]}; the plan has {plan.Partitions}");
                bytes[index.Partitions[i]] += index.Offsets[i + 1] - index.Offsets[i];
            }
        var kept = Enumerable.Range(0, plan.Partitions).Where(p => bytes[p] > 0).ToArray();
        long total = kept.Sum(p => bytes[p]);
        long target = Math.Clamp((total + MinEncodeTasks - 1) / MinEncodeTasks, 1, MaxEncodeTaskBytes);
        var groups = EncodeTaskLayout.Group(kept.Select(p => bytes[p]).ToArray(), target);
        await c.ThrowIfStoppedAsync().ConfigureAwait(false);
        await c.Blobs.WriteAsync(c.WorkPrefix + KeptName, new PartitionRun(kept, [], 0).ToBytes(), WriteCondition.Overwrite, c.CancellationToken).ConfigureAwait(false);
        await Parallel.ForEachAsync(Enumerable.Range(0, groups.Count), new ParallelOptions { MaxDegreeOfParallelism = Parallelism, CancellationToken = c.CancellationToken }, async (g, ct) =>
        {
            var (firstPartition, count) = groups[g];
            var offsets = new long[(long)count * chunks];
            var lengths = new long[(long)count * chunks];
            for (int i = 0; i < count; i++)
            {
                int trained = kept[firstPartition + i];
                for (int k = 0; k < chunks; k++)
                {
                    int at = Array.BinarySearch(indexes[k].Partitions, trained);
                    if (at < 0) continue;
                    offsets[(long)i * chunks + k] = indexes[k].Offsets[at];
                    lengths[(long)i * chunks + k] = indexes[k].Offsets[at + 1] - indexes[k].Offsets[at];
                }
            }
            var layout = new EncodeTaskLayout(firstPartition, kept[firstPartition..(firstPartition + count)], chunks, offsets, lengths);
            await c.Blobs.WriteAsync(LayoutName(c, g), layout.ToBytes(), WriteCondition.Overwrite, ct).ConfigureAwait(false);
        }).ConfigureAwait(false);
        return new StagePlan(groups.Count, kept.Length);
    }

    public async Task<StageResult> EncodeAsync(BuildTaskContext c, int task)
    {
        FreeMemory();
        var job = c.Job;
        var clock = new PhaseClock();
        var plan = await ReadPlanAsync(c).ConfigureAwait(false);
        var layoutName = LayoutName(c, task);
        var layout = EncodeTaskLayout.FromBytes(await c.Blobs.ReadAllAsync(layoutName, c.CancellationToken).ConfigureAwait(false), layoutName);
        int d = plan.InternalDimensions, chunks = layout.Chunks;
        // One ranged read per chunk covers this task's runs in it (consecutive partitions have consecutive runs).
        var pieces = new (long Start, byte[] Bytes)[chunks];
        await Parallel.ForEachAsync(Enumerable.Range(0, chunks), new ParallelOptions { MaxDegreeOfParallelism = Parallelism, CancellationToken = c.CancellationToken }, async (k, ct) =>
        {
            var (offset, length) = layout.Range(k);
            if (length > 0) pieces[k] = (offset, await c.Blobs.ReadRangeAsync(RunsName(c, k), offset, checked((int)length), ct).ConfigureAwait(false));
        }).ConfigureAwait(false);

        var encoders = job.AttributesBlob is null ? null : (await ReadLayoutAsync(c).ConfigureAwait(false)).Encoders;
        await c.ThrowIfStoppedAsync().ConfigureAwait(false);
        clock.Lap("read");
        var folder = c.Index.VersionPrefix(job.Version);
        var summaries = new PartitionSummary[layout.Partitions];
        long vectors = 0, bytes = 0;
        var writes = new List<Task<long>>();
        for (int i = 0; i < layout.Partitions; i++)
        {
            // Chunk order is row order, so ids stay ascending as in the in-process build.
            var runs = new List<PartitionRun>();
            for (int k = 0; k < chunks; k++)
            {
                var (offset, length) = layout.Run(i, k);
                if (length > 0) runs.Add(ChunkRuns.Slice(pieces[k].Bytes, pieces[k].Start, offset, length, d, RunsName(c, k)));
            }
            int n = runs.Sum(r => r.Count);
            var ids = new int[n];
            var x = new float[(long)n * d];
            int at = 0;
            foreach (var r in runs)
            {
                r.Ids.CopyTo(ids, at);
                r.Vectors.CopyTo(x, (long)at * d);
                at += r.Count;
            }
            PartitionAttributes? joined = null;
            if (encoders is not null)
            {
                var parts = runs.Select(r => PartitionAttributes.FromSegment(
                    r.Attributes ?? throw new Squash.Index.Format.CorruptIndexException($"a run of partition {layout.First + i} has no attributes"),
                    $"attributes of a run of partition {layout.First + i}", r.Count, encoders)).ToArray();
                joined = PartitionAttributes.Concat(parts, encoders);
            }
            var encoded = IndexBuildStages.Encode(plan, layout.First + i, ids, x, job.Options.MaxBits, attributeInfo: encoders, encodedAttributes: joined);
            // Written while the next partition is encoded; a few writes in flight at most.
            writes.Add(WriteSegmentAsync(c, folder + encoded.Entry.Codes.Name, encoded.Codes));
            writes.Add(WriteSegmentAsync(c, folder + encoded.Entry.Vectors.Name, encoded.Vectors));
            if (encoded.Attributes is { } attributes) writes.Add(WriteSegmentAsync(c, folder + encoded.Entry.Attributes!.Name, attributes));
            var (cellMin, cellMax) = joined is null ? (null, null) : joined.CellRanges(encoders!, encoded.Entry.AttributeStats!);
            summaries[i] = new PartitionSummary(encoded.Entry, encoded.Centroid, encoded.Radius, cellMin, cellMax, encoded.Values);
            vectors += n;
            while (writes.Count > Parallelism)
            {
                var finished = await Task.WhenAny(writes).ConfigureAwait(false);
                bytes += await finished.ConfigureAwait(false);
                writes.Remove(finished);
            }
        }
        clock.Lap($"encode {layout.Partitions} partitions");
        foreach (var w in writes) bytes += await w.ConfigureAwait(false);
        await c.Blobs.WriteAsync(SummaryName(c, task), PartitionSummary.ToJson(summaries), WriteCondition.Overwrite, c.CancellationToken).ConfigureAwait(false);
        clock.Lap("write");
        return new StageResult(vectors, bytes, clock.ToString());
    }

    public async Task<IndexManifest> PrepareManifestAsync(BuildTaskContext c)
    {
        FreeMemory();
        var job = c.Job;
        var plan = await ReadPlanAsync(c).ConfigureAwait(false);
        int tasks = job.TaskCount(BuildStages.Encode);
        var parts = new PartitionSummary[tasks][];
        await Parallel.ForEachAsync(Enumerable.Range(0, tasks), new ParallelOptions { MaxDegreeOfParallelism = Parallelism, CancellationToken = c.CancellationToken }, async (t, ct) =>
        {
            var name = SummaryName(c, t);
            parts[t] = PartitionSummary.ParseMany(await c.Blobs.ReadAllAsync(name, ct).ConfigureAwait(false), name);
        }).ConfigureAwait(false);
        var summaries = parts.SelectMany(p => p).ToArray();
        IndexAttributes? info = null;
        if (job.AttributesBlob is not null) info = IndexBuildStages.MergeCells((await ReadLayoutAsync(c).ConfigureAwait(false)).Encoders, summaries);
        var options = Options(job, heldOut: false);
        double seconds = job.StartedUtc is { } s ? (DateTimeOffset.UtcNow - s).TotalSeconds : 0;
        var (routing, manifest) = IndexBuildStages.Finish(plan, summaries, job.Count, job.Version, options, info, seconds);
        await WriteSegmentAsync(c, c.Index.VersionPrefix(job.Version) + IndexBuildStages.RoutingName, routing).ConfigureAwait(false);
        var queries = await ReadQueriesAsync(c).ConfigureAwait(false);
        if (!Calibrates(job, queries.Count)) return manifest;

        // The calibration, as CalibratedBuild does it in one process, with the same numbers: the same held-out rows, their
        // exact neighbours merged from the assign tasks' chunks (equal to the whole-set brute force), and the plans replayed
        // partition by partition, one partition in memory at a time; the filtered calibration the same way.
        var clock = Stopwatch.StartNew();
        var keptRun = PartitionRun.FromBytes(await c.Blobs.ReadAllAsync(c.WorkPrefix + KeptName, c.CancellationToken).ConfigureAwait(false), KeptName);
        var final = new Dictionary<int, int>();
        for (int t = 0; t < keptRun.Ids.Length; t++) final[keptRun.Ids[t]] = t;
        var exact = new StreamingGroundTruth(ExactlyMeasured(queries, job), RecallCalibrator.ExactDepth, plan.Metric);
        var partitionOf = new Dictionary<long, int>();
        int d = plan.InternalDimensions;
        var selfStored = new float[(long)queries.Count * d];
        var heldAt = new Dictionary<long, int>();
        for (int q = 0; q < (queries.SelfIds?.Length ?? 0); q++) heldAt[queries.SelfIds![q]] = q;
        for (int chunk = 0; chunk < job.Chunks; chunk++)
        {
            var name = PartialName(c, chunk);
            var partial = CalibrationPartial.FromBytes(await c.Blobs.ReadAllAsync(name, c.CancellationToken).ConfigureAwait(false), name);
            exact.Merge(partial.Best);
            for (int i = 0; i < partial.LabelIds.Length; i++) partitionOf[partial.LabelIds[i]] = final[partial.Labels[i]];
            for (int i = 0; i < partial.HeldIds.Length; i++)
            {
                partitionOf[partial.HeldIds[i]] = final[partial.HeldLabels[i]];
                Array.Copy(partial.HeldStored, (long)i * d, selfStored, (long)heldAt[partial.HeldIds[i]] * d, d);
            }
        }
        var opened = await OpenedIndex.OpenUnpublishedAsync(c.Index, manifest, c.CancellationToken, loadAll: false).ConfigureAwait(false);
        var fitted = await RecallCalibrator.CalibrateByPartitionAsync(opened, exact.Result(), queries, partitionOf, queries.SelfIds is null ? null : selfStored,
            async (p, ct) =>
            {
                var entry = manifest.Partitions[p];
                var codes = c.Index.ReadCodesAsync(manifest, entry, ct);
                var vectors = c.Index.ReadVectorsAsync(manifest, entry, ct);
                return (await codes.ConfigureAwait(false), await vectors.ConfigureAwait(false));
            }, RecallCalibrator.DefaultK, null, c.CancellationToken, async (p, ct) =>
            {
                // The filtered calibration's reads, one partition at a time (the manifest has attributes when these are asked for).
                var entry = manifest.Partitions[p];
                var codes = c.Index.ReadCodesAsync(manifest, entry, ct);
                var attributes = c.Index.ReadAttributesAsync(manifest, entry, ct);
                return (await codes.ConfigureAwait(false), await attributes.ConfigureAwait(false));
            }).ConfigureAwait(false);
        if (fitted is not null && queries.SelfIds is null)
            fitted = await KeptCalibrationQueries.KeepAsync(c.Index, job.Version, queries, fitted, c.CancellationToken).ConfigureAwait(false);
        return manifest with
        {
            Calibration = fitted,
            Build = manifest.Build with { BuildSeconds = Math.Round(manifest.Build.BuildSeconds + clock.Elapsed.TotalSeconds, 3) },
        };
    }

    /// <summary>
    /// A full, compacting collection before a task (and between its phases), so that a worker's memory is what the task
    /// holds rather than that plus the large buffers of earlier tasks: they live on the large-object heap, which is
    /// collected only in full collections, and a worker runs many tasks one after another. Costs tens of milliseconds.
    /// </summary>
    private static void FreeMemory()
    {
        System.Runtime.GCSettings.LargeObjectHeapCompactionMode = System.Runtime.GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }

    private Task<BuildPlan> ReadPlanAsync(BuildTaskContext c) =>
        _cache.GetAsync(c.WorkPrefix + PlanName, async () =>
            BuildPlan.FromBytes(await c.Blobs.ReadAllAsync(c.WorkPrefix + PlanName, c.CancellationToken).ConfigureAwait(false), PlanName));

    /// <summary>The queries measured against exact neighbours, as <see cref="RecallCalibrator"/> takes them.</summary>
    private static CalibrationQueries ExactlyMeasured(CalibrationQueries queries, BuildJob job) =>
        queries.Take(RecallCalibrator.ExactQueries(job.Count, queries.Count));

    /// <summary>
    /// The calibration's held-out rows as leave-one-out queries (none without calibration), or the user's queries with
    /// their filter families, as the in-process build takes them.
    /// </summary>
    private Task<CalibrationQueries> ReadQueriesAsync(BuildTaskContext c) =>
        _cache.GetAsync(c.WorkPrefix + QueriesName, async () =>
        {
            var held = PartitionRun.FromBytes(await c.Blobs.ReadAllAsync(c.WorkPrefix + QueriesName, c.CancellationToken).ConfigureAwait(false), QueriesName);
            if (c.Job.CalibrationQueriesBlob is null)
                return new CalibrationQueries(held.Vectors, held.Count, c.Job.Dimensions, held.Ids.Select(r => (long)r).ToArray(), "base-sample");
            var families = new List<CalibrationFilters>();
            foreach (var blob in c.Job.CalibrationFilterBlobs ?? [])
                families.Add((await ReadFilterFileAsync(c, blob).ConfigureAwait(false)).Family(held.Count));
            return new CalibrationQueries(held.Vectors, held.Count, c.Job.Dimensions, null, "queries", Filters: families.Count > 0 ? families : null);
        });

    /// <summary>
    /// One calibration filter blob, checked against its ETag at submission and to hold one filter per calibration query
    /// (the whole query blob, as the CLI checks a file); named as the CLI names a file's family, by its file name.
    /// </summary>
    private static async Task<CalibrationFilterFile> ReadFilterFileAsync(BuildTaskContext c, BuildAttributesBlob blob)
    {
        byte[] bytes;
        try { bytes = await c.Blobs.ReadAllAsync(blob.Name, c.CancellationToken).ConfigureAwait(false); }
        catch (BlobNotFoundException) { throw new SourceChangedException(blob.Name, blob.ETag, null); }
        await BlobVectorSource.CheckUnchangedAsync(c.Blobs, blob.Name, blob.ETag, c.CancellationToken).ConfigureAwait(false);
        var text = System.Text.Encoding.UTF8.GetString(bytes);
        var file = CalibrationFilterFile.Parse(Path.GetFileName(blob.Name), text.Split('\n'));
        long queries = c.Job.CalibrationQueriesBlob!.Rows;
        if (file.Texts.Length != queries)
            throw new BuildInputException($"calibration filter blob '{blob.Name}' has {file.Texts.Length:N0} filters; the calibration queries blob '{c.Job.CalibrationQueriesBlob.Name}' has {queries:N0} queries (one filter per query, null for none)");
        return file;
    }

    /// <summary>Create-only, as every segment of a version is written; the same bytes already there (a repeated task) are fine.</summary>
    private static async Task<long> WriteSegmentAsync(BuildTaskContext c, string name, byte[] bytes)
    {
        try
        {
            await c.Blobs.WriteAsync(name, bytes, WriteCondition.IfNotExists, c.CancellationToken).ConfigureAwait(false);
        }
        catch (BlobConditionFailedException)
        {
            var existing = await c.Blobs.ReadAllAsync(name, c.CancellationToken).ConfigureAwait(false);
            if (!existing.AsSpan().SequenceEqual(bytes)) throw new InvalidOperationException($"segment '{name}' already exists with other content");
        }
        return bytes.LongLength;
    }

    /// <summary>
    /// Train's scan of the attributes blob (checked against its ETag at submission before and after), with the declared schema
    /// or inferred as the CLI infers it, chunked as the source is.
    /// </summary>
    private static async Task<AttributeLayout> ScanAttributesAsync(BuildTaskContext c)
    {
        var blob = c.Job.AttributesBlob!;
        var info = await c.Blobs.GetInfoAsync(blob.Name, c.CancellationToken).ConfigureAwait(false);
        if (info is null || info.ETag != blob.ETag) throw new SourceChangedException(blob.Name, blob.ETag, info?.ETag);
        var declared = c.Job.Source.Schema is { } text ? AttributeSchema.Parse(text) : null;
        var layout = await AttributeReader.ScanAsync(blob.Name, info.Length, async (offset, length, ct) =>
        {
            try { return await c.Blobs.ReadRangeAsync(blob.Name, offset, length, ct).ConfigureAwait(false); }
            catch (BlobNotFoundException) { throw new SourceChangedException(blob.Name, blob.ETag, null); }
        }, declared, c.Job.ChunkRows, c.CancellationToken).ConfigureAwait(false);
        await BlobVectorSource.CheckUnchangedAsync(c.Blobs, blob.Name, blob.ETag, c.CancellationToken).ConfigureAwait(false);
        return layout;
    }

    /// <summary>Rows [first, first + n) of the attributes blob: one ranged read of where train found chunk <paramref name="chunk"/>.</summary>
    private static async Task<AttributeTable> ReadAttributeChunkAsync(BuildTaskContext c, AttributeLayout layout, int chunk, long first, int n)
    {
        var blob = c.Job.AttributesBlob!;
        if (layout.ChunkRows != c.Job.ChunkRows || layout.Chunks != c.Job.Chunks)
            throw new Squash.Index.Format.CorruptIndexException($"'{AttributesName}' has {layout.Chunks} chunks of {layout.ChunkRows} rows; the job has {c.Job.Chunks} of {c.Job.ChunkRows}");
        var (offset, length) = layout.ChunkRange(chunk);
        byte[] bytes;
        try { bytes = await c.Blobs.ReadRangeAsync(blob.Name, offset, checked((int)length), c.CancellationToken).ConfigureAwait(false); }
        catch (BlobNotFoundException) { throw new SourceChangedException(blob.Name, blob.ETag, null); }
        await BlobVectorSource.CheckUnchangedAsync(c.Blobs, blob.Name, blob.ETag, c.CancellationToken).ConfigureAwait(false);
        return AttributeReader.ReadChunk(bytes, blob.Name, layout, first, n);
    }

    private Task<AttributeLayout> ReadLayoutAsync(BuildTaskContext c) =>
        _cache.GetAsync(c.WorkPrefix + AttributesName, async () =>
            AttributeLayout.FromJson(await c.Blobs.ReadAllAsync(c.WorkPrefix + AttributesName, c.CancellationToken).ConfigureAwait(false), AttributesName));
}

/// <summary>
/// A few values parsed from blobs that never change once written (a build's plan, its held-out rows), by blob name: the
/// least recently used goes when a new one arrives. A failed read is not kept.
/// </summary>
internal sealed class ImmutableBlobCache(int capacity)
{
    private readonly LinkedList<(string Name, Task<object> Value)> _entries = new();

    public async Task<T> GetAsync<T>(string name, Func<Task<T>> load) where T : class
    {
        Task<object> task;
        lock (_entries)
        {
            var node = _entries.First;
            while (node is not null && node.Value.Name != name) node = node.Next;
            if (node is not null) _entries.Remove(node);
            else node = new LinkedListNode<(string, Task<object>)>((name, LoadAsync(load)));
            _entries.AddFirst(node);
            while (_entries.Count > capacity) _entries.RemoveLast();
            task = node.Value.Value;
        }
        try
        {
            return (T)await task.ConfigureAwait(false);
        }
        catch
        {
            lock (_entries)
                for (var n = _entries.First; n is not null; n = n.Next)
                    if (n.Value.Value == task) { _entries.Remove(n); break; }
            throw;
        }
    }

    private static async Task<object> LoadAsync<T>(Func<Task<T>> load) where T : class => await load().ConfigureAwait(false);
}
