using System.Diagnostics;
using System.Text;
using System.Text.Json;
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
/// plan.seg                         train: the fitted partitioning (and global subspace)
/// queries.run                      train: the calibration's held-out rows (user space)
/// runs/pPPPPP/cCCCCC.run           assign: chunk C's rows of trained partition P (ids ascending, internal space)
/// partitions.json                  start of encode: the trained partitions some row chose, in order (encode task t = entry t)
/// parts/pTTTTT.json                encode: partition t's manifest entry, centroid and radius
/// </code>
/// Memory per task: train holds the training sample (at most ~256 MB of floats) and one chunk; assign one chunk;
/// encode one partition; publish the calibration (which reads the whole index, like the in-process calibration).
/// Every blob here is a deterministic function of the job, so a repeated task rewrites the same bytes.
/// </summary>
public sealed class QueueStageWork : IBuildStageWork
{
    private const string PlanName = "plan.seg", QueriesName = "queries.run", KeptName = "partitions.json";

    private static string RunPrefix(BuildTaskContext c, int trained) => $"{c.WorkPrefix}runs/p{trained:D5}/";
    private static string SummaryName(BuildTaskContext c, int partition) => $"{c.WorkPrefix}parts/p{partition:D5}.json";

    /// <summary>The in-process build's options for this job (the same defaults as <c>squash build</c>); the held-out rows only when asked (they cost a pass over N row numbers).</summary>
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

    /// <summary>The calibration's base-sample rows, chosen as <see cref="CalibratedBuild"/> chooses them; null without calibration.</summary>
    public static int[]? HeldOutRows(BuildJob job) =>
        job.Options.Calibrate && job.Count >= RecallCalibrator.MinimumVectors
            ? CalibrationQueries.SampleRows((int)job.Count, Math.Min(RecallCalibrator.DefaultQueries, (int)job.Count / 10), job.Options.Seed)
            : null;

    public Task<int> PrepareStageAsync(BuildTaskContext c, string stage) => stage switch
    {
        BuildStages.Assign => Task.FromResult(c.Job.Chunks),
        BuildStages.Encode => KeepPartitionsAsync(c),
        _ => Task.FromResult(1),
    };

    public async Task<StageResult> TrainAsync(BuildTaskContext c)
    {
        var job = c.Job;
        var options = Options(job);
        try { options.Validate(job.Count, job.Dimensions); }
        catch (ArgumentException e) { throw new BuildInputException(e.Message); }
        if (job.AttributesBlob is not null)
        {
            var table = await ReadAttributesAsync(c).ConfigureAwait(false);
            if (table.Count != job.Count)
                throw new BuildInputException($"the attributes blob '{job.AttributesBlob.Name}' has {table.Count:N0} rows but there are {job.Count:N0} vectors (rows are matched by position)");
        }

        // One pass over the source, chunk by chunk: every row is checked (NaN, dimensions), the largest norm found (ip), and the
        // training and calibration rows picked out.
        int dims = job.Dimensions;
        int target = IndexBuildStages.TargetPartitions(options, job.Count, dims);
        int internalDims = new MetricSpace(options.Metric, dims).InternalDimensions;
        var trainingRows = PartitionTraining.TrainingRows((int)job.Count, internalDims, target, options.HeldOutRows);
        var held = options.HeldOutRows ?? [];
        var training = new float[(long)trainingRows.Length * dims];
        var queries = new float[(long)held.Length * dims];
        double maxNorm = 0;
        int nextTraining = 0, nextHeld = 0;
        var chunk = new float[(long)job.ChunkRows * dims];
        for (long first = 0; first < job.Count; first += job.ChunkRows)
        {
            int n = (int)Math.Min(job.ChunkRows, job.Count - first);
            await BlobVectorSource.ReadRowsAsync(c.Blobs, job.Blobs, first, n, chunk, c.CancellationToken).ConfigureAwait(false);
            if (options.Metric == Metric.InnerProduct) maxNorm = Math.Max(maxNorm, MetricSpace.MaxRowNorm(chunk.AsSpan(0, n * dims), dims));
            for (; nextTraining < trainingRows.Length && trainingRows[nextTraining] < first + n; nextTraining++)
                Array.Copy(chunk, (trainingRows[nextTraining] - first) * dims, training, (long)nextTraining * dims, dims);
            for (; nextHeld < held.Length && held[nextHeld] < first + n; nextHeld++)
                Array.Copy(chunk, (held[nextHeld] - first) * dims, queries, (long)nextHeld * dims, dims);
        }
        var plan = IndexBuildStages.Train(training, trainingRows.Length, dims, maxNorm, target, options, null, c.CancellationToken);
        await c.ThrowIfStoppedAsync().ConfigureAwait(false);
        var planBytes = plan.ToBytes();
        await c.Blobs.WriteAsync(c.WorkPrefix + PlanName, planBytes, WriteCondition.Overwrite, c.CancellationToken).ConfigureAwait(false);
        var queryBytes = new PartitionRun(held, queries, dims).ToBytes();
        await c.Blobs.WriteAsync(c.WorkPrefix + QueriesName, queryBytes, WriteCondition.Overwrite, c.CancellationToken).ConfigureAwait(false);
        return new StageResult(0, planBytes.LongLength + queryBytes.LongLength);
    }

    public async Task<StageResult> AssignAsync(BuildTaskContext c, int chunk)
    {
        var job = c.Job;
        var plan = await ReadPlanAsync(c).ConfigureAwait(false);
        long first = (long)chunk * job.ChunkRows;
        int n = (int)Math.Min(job.ChunkRows, job.Count - first), d = plan.InternalDimensions;
        var rows = new float[(long)n * job.Dimensions];
        await BlobVectorSource.ReadRowsAsync(c.Blobs, job.Blobs, first, n, rows, c.CancellationToken).ConfigureAwait(false);
        var (x, labels) = IndexBuildStages.Assign(plan, rows, n);
        var members = new Dictionary<int, List<int>>();
        for (int i = 0; i < n; i++)
        {
            if (!members.TryGetValue(labels[i], out var list)) members[labels[i]] = list = [];
            list.Add(i);
        }
        await c.ThrowIfStoppedAsync().ConfigureAwait(false);
        long bytes = 0;
        foreach (var (p, local) in members.OrderBy(m => m.Key))
        {
            var ids = local.Select(i => checked((int)(first + i))).ToArray();
            var vectors = new float[(long)local.Count * d];
            for (int i = 0; i < local.Count; i++) Array.Copy(x, (long)local[i] * d, vectors, (long)i * d, d);
            var run = new PartitionRun(ids, vectors, d).ToBytes();
            await c.Blobs.WriteAsync($"{RunPrefix(c, p)}c{chunk:D6}.run", run, WriteCondition.Overwrite, c.CancellationToken).ConfigureAwait(false);
            bytes += run.LongLength;
        }
        return new StageResult(n, bytes);
    }

    /// <summary>The trained partitions some chunk wrote rows for, in order: encode task t encodes entry t as partition t.</summary>
    private static async Task<int> KeepPartitionsAsync(BuildTaskContext c)
    {
        var prefix = c.WorkPrefix + "runs/p";
        var kept = new SortedSet<int>();
        await foreach (var b in c.Blobs.ListAsync(prefix, c.CancellationToken).ConfigureAwait(false))
            kept.Add(int.Parse(b.Name.AsSpan(prefix.Length, 5), System.Globalization.CultureInfo.InvariantCulture));
        await c.Blobs.WriteAsync(c.WorkPrefix + KeptName, JsonSerializer.SerializeToUtf8Bytes(kept.ToArray(), StageWorkJson.Default.Int32Array),
            WriteCondition.Overwrite, c.CancellationToken).ConfigureAwait(false);
        return kept.Count;
    }

    public async Task<StageResult> EncodeAsync(BuildTaskContext c, int partition)
    {
        var job = c.Job;
        var plan = await ReadPlanAsync(c).ConfigureAwait(false);
        var kept = JsonSerializer.Deserialize(await c.Blobs.ReadAllAsync(c.WorkPrefix + KeptName, c.CancellationToken).ConfigureAwait(false), StageWorkJson.Default.Int32Array)!;
        int trained = kept[partition], d = plan.InternalDimensions;
        var runs = new List<PartitionRun>();
        await foreach (var b in c.Blobs.ListAsync(RunPrefix(c, trained), c.CancellationToken).ConfigureAwait(false))
            runs.Add(PartitionRun.FromBytes(await c.Blobs.ReadAllAsync(b.Name, c.CancellationToken).ConfigureAwait(false), b.Name));
        // Listing is in name order, which is chunk order, so ids stay ascending as in the in-process build.
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
        runs.Clear();
        AttributeTable? table = null;
        IndexAttributes? info = null;
        if (job.AttributesBlob is not null)
        {
            table = await ReadAttributesAsync(c).ConfigureAwait(false);
            info = AttributeEncoding.Fit(table);
        }
        var encoded = IndexBuildStages.Encode(plan, partition, ids, x, job.Options.MaxBits, table, info);
        await c.ThrowIfStoppedAsync().ConfigureAwait(false);
        long bytes = 0;
        var folder = c.Index.VersionPrefix(job.Version);
        bytes += await WriteSegmentAsync(c, folder + encoded.Entry.Codes.Name, encoded.Codes).ConfigureAwait(false);
        bytes += await WriteSegmentAsync(c, folder + encoded.Entry.Vectors.Name, encoded.Vectors).ConfigureAwait(false);
        if (encoded.Attributes is { } attributes) bytes += await WriteSegmentAsync(c, folder + encoded.Entry.Attributes!.Name, attributes).ConfigureAwait(false);
        var summary = new PartitionSummary(encoded.Entry, encoded.Centroid, encoded.Radius).ToJson();
        await c.Blobs.WriteAsync(SummaryName(c, partition), summary, WriteCondition.Overwrite, c.CancellationToken).ConfigureAwait(false);
        return new StageResult(n, bytes);
    }

    public async Task<IndexManifest> PrepareManifestAsync(BuildTaskContext c)
    {
        var job = c.Job;
        var plan = await ReadPlanAsync(c).ConfigureAwait(false);
        var summaries = new List<PartitionSummary>();
        for (int p = 0; p < job.Partitions; p++)
        {
            var name = SummaryName(c, p);
            summaries.Add(PartitionSummary.Parse(await c.Blobs.ReadAllAsync(name, c.CancellationToken).ConfigureAwait(false), name));
        }
        IndexAttributes? info = null;
        if (job.AttributesBlob is not null) info = AttributeEncoding.Fit(await ReadAttributesAsync(c).ConfigureAwait(false));
        var options = Options(job, heldOut: false);
        double seconds = job.StartedUtc is { } s ? (DateTimeOffset.UtcNow - s).TotalSeconds : 0;
        var (routing, manifest) = IndexBuildStages.Finish(plan, summaries, job.Count, job.Version, options, info, seconds);
        await WriteSegmentAsync(c, c.Index.VersionPrefix(job.Version) + IndexBuildStages.RoutingName, routing).ConfigureAwait(false);
        if (!job.Options.Calibrate) return manifest;

        // The calibration, as CalibratedBuild does it in one process: the same held-out rows, and exact neighbours merged
        // chunk by chunk (equal to the whole-set brute force), so the same plans are chosen.
        var clock = Stopwatch.StartNew();
        var held = PartitionRun.FromBytes(await c.Blobs.ReadAllAsync(c.WorkPrefix + QueriesName, c.CancellationToken).ConfigureAwait(false), QueriesName);
        var queries = new CalibrationQueries(held.Vectors, held.Count, job.Dimensions, held.Ids.Select(r => (long)r).ToArray(), "base-sample");
        RecallCalibration? fitted = null;
        if (job.Count >= Math.Max(RecallCalibrator.MinimumVectors, 2L * RecallCalibrator.DefaultK) && queries.Count > 0)
        {
            var exact = new StreamingGroundTruth(queries, RecallCalibrator.DefaultK, plan.Metric);
            var chunk = new float[(long)job.ChunkRows * job.Dimensions];
            for (long first = 0; first < job.Count; first += job.ChunkRows)
            {
                int n = (int)Math.Min(job.ChunkRows, job.Count - first);
                await BlobVectorSource.ReadRowsAsync(c.Blobs, job.Blobs, first, n, chunk, c.CancellationToken).ConfigureAwait(false);
                exact.Add(chunk, n, (int)first, c.CancellationToken);
            }
            var opened = await OpenedIndex.OpenUnpublishedAsync(c.Index, manifest, c.CancellationToken).ConfigureAwait(false);
            fitted = RecallCalibrator.Calibrate(opened, exact.Result(), queries, RecallCalibrator.DefaultK, null, c.CancellationToken);
        }
        return manifest with
        {
            Calibration = fitted,
            Build = manifest.Build with { BuildSeconds = Math.Round(manifest.Build.BuildSeconds + clock.Elapsed.TotalSeconds, 3) },
        };
    }

    private static async Task<BuildPlan> ReadPlanAsync(BuildTaskContext c) =>
        BuildPlan.FromBytes(await c.Blobs.ReadAllAsync(c.WorkPrefix + PlanName, c.CancellationToken).ConfigureAwait(false), PlanName);

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

    /// <summary>The attributes blob, checked against its ETag at submission, read with the declared schema (or inferred, as the CLI does).</summary>
    private static async Task<AttributeTable> ReadAttributesAsync(BuildTaskContext c)
    {
        var blob = c.Job.AttributesBlob!;
        await BlobVectorSource.CheckUnchangedAsync(c.Blobs, blob.Name, blob.ETag, c.CancellationToken).ConfigureAwait(false);
        byte[] bytes;
        try { bytes = await c.Blobs.ReadAllAsync(blob.Name, c.CancellationToken).ConfigureAwait(false); }
        catch (BlobNotFoundException) { throw new SourceChangedException(blob.Name, blob.ETag, null); }
        await BlobVectorSource.CheckUnchangedAsync(c.Blobs, blob.Name, blob.ETag, c.CancellationToken).ConfigureAwait(false);
        var declared = c.Job.Source.Schema is { } text ? AttributeSchema.Parse(text) : null;
        using var reader = new StreamReader(new MemoryStream(bytes), Encoding.UTF8);
        return Path.GetExtension(blob.Name).Equals(".csv", StringComparison.OrdinalIgnoreCase)
            ? AttributeReader.ReadCsv(reader, blob.Name, declared)
            : AttributeReader.ReadJsonLines(reader, blob.Name, declared);
    }
}

[System.Text.Json.Serialization.JsonSerializable(typeof(int[]))]
internal sealed partial class StageWorkJson : System.Text.Json.Serialization.JsonSerializerContext;
