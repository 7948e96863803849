using System.Text.Json;
using System.Text.Json.Serialization;

namespace Squash.Storage.Builds;

/// <summary>The states of a build job, as the API reports them.</summary>
public static class BuildStatus
{
    public const string Queued = "queued", Training = "training", Assigning = "assigning", Encoding = "encoding",
        Publishing = "publishing", Succeeded = "succeeded", Failed = "failed", Cancelled = "cancelled";

    public static bool IsTerminal(string status) => status is Succeeded or Failed or Cancelled;
}

/// <summary>The four stages, in order; each is a queue and a function (<c>build-{stage}</c>, queue <c>squash-build-{stage}</c>).</summary>
public static class BuildStages
{
    public const string Train = "train", Assign = "assign", Encode = "encode", Publish = "publish";
    public static readonly string[] All = [Train, Assign, Encode, Publish];

    public static string QueueName(string stage) => "squash-build-" + stage;
    public static string FunctionName(string stage) => "build-" + stage;

    /// <summary>The job status while a stage runs.</summary>
    public static string StatusOf(string stage) => stage switch
    {
        Train => BuildStatus.Training,
        Assign => BuildStatus.Assigning,
        Encode => BuildStatus.Encoding,
        _ => BuildStatus.Publishing,
    };
}

/// <summary>What the user asked to build from: blob names in the store (a name or a prefix) and an optional schema.</summary>
public sealed record BuildSourceSpec
{
    public required string Vectors { get; init; }
    public string? Attributes { get; init; }
    /// <summary>Declared attribute types in the CLI's text form (<c>price:number,label:integer</c>), or null to infer.</summary>
    public string? Schema { get; init; }
    /// <summary>A vector blob of queries like the ones the index will serve, to calibrate recall targets with (null: a sample of the base vectors).</summary>
    public string? CalibrationQueries { get; init; }
    /// <summary>With <see cref="CalibrationQueries"/>: filter blobs, one JSON filter per line (line i for query i), each a family the calibration measures.</summary>
    public IReadOnlyList<string>? CalibrationFilters { get; init; }
}

/// <summary>One vector blob as it was at submission: its ETag (a change fails the build) and its layout.</summary>
public sealed record BuildSourceBlob(string Name, string ETag, long Bytes, string Format, string Element, long Rows, int Dimensions, long DataOffset, int RecordPrefix)
{
    public Squash.Index.Build.Sources.SourceLayout Layout() =>
        new(Format, Enum.Parse<Squash.Index.Build.Sources.SourceElement>(Element), Rows, Dimensions, DataOffset, RecordPrefix);
}

/// <summary>An attributes or calibration-filter blob as it was at submission.</summary>
public sealed record BuildAttributesBlob(string Name, string ETag, long Bytes);

/// <summary>The build options the job runs with (the same as <c>squash build</c>'s).</summary>
public sealed record BuildJobOptions
{
    /// <summary>The in-process build's defaults, which a queue build takes too, so both build the same index unless told otherwise.</summary>
    private static readonly Squash.Index.Build.IndexBuildOptions InProcess = new();

    public string Metric { get; init; } = "l2";
    /// <summary>0 picks the default for the vector count.</summary>
    public int Partitions { get; init; }
    public double BitsPerDim { get; init; } = InProcess.BitsPerDimension;
    public int MaxBits { get; init; } = InProcess.MaxBitsPerDimension;
    /// <summary>The in-process build's default (it was 0.95 here, so a job made without the API built another index).</summary>
    public double Energy { get; init; } = InProcess.EnergyKept;
    public int Seed { get; init; } = InProcess.Seed;
    public bool Calibrate { get; init; } = true;
    /// <summary>Rows per assign task (0: chosen from the dimensions, about 32 MB of float32 per chunk).</summary>
    public int ChunkRows { get; init; }
}

/// <summary>
/// What a rebuild job rebuilds: the version whose live rows are its source, and the log position that version covers. Its
/// publish task writes the version with that watermark and leaves the pointer to ingest, which applies the log past it.
/// </summary>
/// <param name="MaxNorm">
/// Inner product: the base's largest norm, which the rebuilt version keeps at least. The write API took the log's upserts
/// up to that norm, and the live rows (the source) may all be shorter; a rebuild fitted to them alone could not store the
/// writes past its position (their augmented coordinate √(M² − ‖x‖²) does not exist) and answered wrong distances for them.
/// 0 for other metrics and for jobs queued before it was recorded.
/// </param>
public sealed record RebuildOf(string BaseVersion, long CoversSequence, double MaxNorm = 0);

/// <summary>Tasks done and total for one stage.</summary>
public sealed record StageProgress(string Stage, int Done, int Total);

/// <summary>Why a job failed: a stable code, a message for people, and the task it happened in.</summary>
public sealed record BuildError(string Code, string Message, string? Task = null);

/// <summary>
/// One build job: a JSON blob at <c>{index}/builds/{buildId}/job.json</c>, changed only by compare-and-swap on its
/// ETag, so concurrent task finishers, a cancel and a failure never lose each other's updates.
/// </summary>
public sealed record BuildJob
{
    public required string BuildId { get; init; }
    public required string Index { get; init; }
    public required string Status { get; init; }
    public required DateTimeOffset CreatedUtc { get; init; }
    public DateTimeOffset? StartedUtc { get; init; }
    public DateTimeOffset? FinishedUtc { get; init; }
    public string? IdempotencyKey { get; init; }
    /// <summary>The version the build writes (chosen at submission from <see cref="VersionIds"/>).</summary>
    public required string Version { get; init; }
    public required BuildSourceSpec Source { get; init; }
    public required BuildJobOptions Options { get; init; }
    public required IReadOnlyList<BuildSourceBlob> Blobs { get; init; }
    public BuildAttributesBlob? AttributesBlob { get; init; }
    /// <summary>The calibration queries' blob as it was at submission (null: the build calibrates on held-out base rows).</summary>
    public BuildSourceBlob? CalibrationQueriesBlob { get; init; }
    /// <summary>The calibration filters' blobs as they were at submission, in the order given.</summary>
    public IReadOnlyList<BuildAttributesBlob>? CalibrationFilterBlobs { get; init; }
    public required long Count { get; init; }
    public required int Dimensions { get; init; }
    /// <summary>Rows per assign task; the last chunk may be shorter.</summary>
    public required int ChunkRows { get; init; }
    /// <summary>Partitions: the target at submission, then (once the encode stage starts) those some row chose.</summary>
    public required int Partitions { get; init; }
    public required IReadOnlyList<StageProgress> Stages { get; init; }
    /// <summary>Vectors routed to their partitions so far, and vectors encoded.</summary>
    public long VectorsAssigned { get; init; }
    public long VectorsEncoded { get; init; }
    public long BytesWritten { get; init; }
    /// <summary>Set by the publisher just before it writes the manifest: from then on a cancel is refused, so a cancelled job never publishes.</summary>
    public bool PublishCommitted { get; init; }
    /// <summary>Whether <c>current</c> named this build's version when it finished (false: a newer version was already current).</summary>
    public bool? Current { get; init; }
    public BuildError? Error { get; init; }
    /// <summary>Set when ingest queued this job to rebuild the index from a version's live rows (docs/writes.md, "Full rebuild").</summary>
    public RebuildOf? Rebuild { get; init; }

    public int Chunks => (int)((Count + ChunkRows - 1) / ChunkRows);

    public StageProgress Stage(string stage) => Stages.First(s => s.Stage == stage);

    public int TaskCount(string stage) => Stage(stage).Total;

    public BuildJob WithStage(string stage, Func<StageProgress, StageProgress> change) =>
        this with { Stages = Stages.Select(s => s.Stage == stage ? change(s) : s).ToArray() };

    /// <summary>Share of the work done, weighting the stages by their usual share of a build's time.</summary>
    public double FractionDone()
    {
        if (Status == BuildStatus.Succeeded) return 1;
        double[] weights = [0.15, 0.30, 0.45, 0.10];
        double done = 0;
        for (int i = 0; i < BuildStages.All.Length; i++)
        {
            var s = Stage(BuildStages.All[i]);
            done += weights[i] * (s.Total == 0 ? 0 : Math.Min(1, s.Done / (double)s.Total));
        }
        return done;
    }

    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, BuildJson.Default.BuildJob);

    public static BuildJob Parse(byte[] bytes, string name)
    {
        try
        {
            var job = JsonSerializer.Deserialize(bytes, BuildJson.Default.BuildJob) ?? throw new BuildRecordDamagedException(name, $"build record '{name}' is null");
            if (job.ShapeProblem() is { } problem) throw new BuildRecordDamagedException(name, $"build record '{name}' is not valid: {problem}");
            return job;
        }
        catch (JsonException e)
        {
            throw new BuildRecordDamagedException(name, $"build record '{name}' is not valid: {e.Message}");
        }
    }

    /// <summary>
    /// What the serializer lets through but no reader of a job can use: a required field given as null, or stages that are
    /// not the four (every view and task looks each stage up). Null when the record has a job's shape.
    /// </summary>
    private string? ShapeProblem()
    {
        var missing = new (string Field, object? Value)[]
        {
            ("buildId", BuildId), ("index", Index), ("status", Status), ("version", Version), ("source", Source),
            ("source.vectors", Source?.Vectors), ("options", Options), ("blobs", Blobs), ("stages", Stages),
        }.FirstOrDefault(f => f.Value is null).Field;
        if (missing is not null) return $"'{missing}' is null";
        if (Blobs.Any(b => b is null)) return "'blobs' holds a null";
        var stages = Stages.Select(s => s?.Stage).ToArray();
        if (!stages.Order(StringComparer.Ordinal).SequenceEqual(BuildStages.All.Order(StringComparer.Ordinal)))
            return $"'stages' must list {string.Join(", ", BuildStages.All)} once each, got [{string.Join(", ", stages.Select(x => x ?? "null"))}]";
        return null;
    }
}

/// <summary>A job record that cannot be read: no retry mends it, so its task messages are dropped and the API says which blob it is.</summary>
public sealed class BuildRecordDamagedException(string blobName, string message) : Exception(message)
{
    public string BlobName { get; } = blobName;
}

/// <summary>A queue message: names only (the job record holds everything else), well under the 64 KB message limit.</summary>
public sealed record BuildTaskMessage
{
    public required string Index { get; init; }
    public required string BuildId { get; init; }
    public required string Stage { get; init; }
    public required int Task { get; init; }

    public string Describe() => $"{Stage}[{Task}]";

    public string ToJson() => JsonSerializer.Serialize(this, BuildJson.Default.BuildTaskMessage);
}

/// <summary>
/// A stage's finished tasks (one bit per task, so a redelivered task is recognised) and the sums of what they did. One
/// small blob per stage, changed by compare-and-swap: a finishing task costs one write instead of a marker, a listing
/// and an update of the job record, and the swap that sets the last bit tells its task that the stage is complete.
/// </summary>
public sealed record StageTally
{
    public static readonly StageTally Empty = new() { Done = [] };

    /// <summary>Bit t (byte t / 8, bit t % 8) is set once task t has finished.</summary>
    public required byte[] Done { get; init; }
    public int Count { get; init; }
    public long Vectors { get; init; }
    public long Bytes { get; init; }

    public bool IsDone(int task) => task >> 3 < Done.Length && (Done[task >> 3] & (1 << (task & 7))) != 0;

    public StageTally With(int task, long vectors, long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(task);
        var done = new byte[Math.Max(Done.Length, (task >> 3) + 1)];
        Done.CopyTo(done, 0);
        done[task >> 3] |= (byte)(1 << (task & 7));
        return new StageTally { Done = done, Count = Count + 1, Vectors = Vectors + vectors, Bytes = Bytes + bytes };
    }

    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, BuildJson.Default.StageTally);

    public static StageTally Parse(byte[] bytes, string name)
    {
        try
        {
            return JsonSerializer.Deserialize(bytes, BuildJson.Default.StageTally) ?? throw new InvalidDataException($"stage tally '{name}' is null");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"stage tally '{name}' is not valid: {e.Message}");
        }
    }
}

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow, NumberHandling = JsonNumberHandling.Strict)]
[JsonSerializable(typeof(BuildJob))]
[JsonSerializable(typeof(BuildTaskMessage))]
[JsonSerializable(typeof(IdempotencyRecord))]
[JsonSerializable(typeof(StageTally))]
public sealed partial class BuildJson : JsonSerializerContext;

/// <summary>What an Idempotency-Key maps to: the job, and a hash of the request it was first sent with.</summary>
public sealed record IdempotencyRecord(string BuildId, string RequestHash);
