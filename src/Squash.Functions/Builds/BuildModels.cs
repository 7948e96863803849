using System.Text.Json;
using System.Text.Json.Serialization;
using Squash.Storage.Builds;

namespace Squash.Functions.Builds;

/// <summary>POST /api/indexes/{index}/builds.</summary>
public sealed record BuildRequest
{
    public BuildSourceRequest? Source { get; init; }
    public BuildOptionsRequest? Options { get; init; }
}

public sealed record BuildSourceRequest
{
    /// <summary>A vector blob (.fvecs, .bvecs, .npy) in the store, or a prefix: every blob under it, in name order.</summary>
    public string? Vectors { get; init; }
    /// <summary>Attributes blob (.jsonl or .csv), one row per vector by position.</summary>
    public string? Attributes { get; init; }
    /// <summary>Declared attribute types: <c>{"price":"number","label":"integer"}</c> (default: inferred).</summary>
    public JsonElement? Schema { get; init; }
    /// <summary>A vector blob of queries like the ones the index will serve, to calibrate recall targets with (default: a sample of the base vectors).</summary>
    public string? CalibrationQueries { get; init; }
    /// <summary>With <see cref="CalibrationQueries"/>: blobs of one JSON filter per line (line i for query i, null: none), each measured as its own family.</summary>
    public IReadOnlyList<string>? CalibrationFilters { get; init; }
}

/// <summary>The options of <c>squash build</c>.</summary>
public sealed record BuildOptionsRequest
{
    public string? Metric { get; init; }
    public int? Partitions { get; init; }
    public double? BitsPerDim { get; init; }
    public int? MaxBits { get; init; }
    public double? Energy { get; init; }
    public int? Seed { get; init; }
    public bool? Calibrate { get; init; }
    /// <summary>Rows per assign task (default: about 32 MB of float32).</summary>
    public int? ChunkRows { get; init; }
}

public sealed record BuildAccepted(string BuildId, string Status);

public sealed record BuildVectors(long Total, int Dimensions, long Assigned, long Encoded);

public sealed record BuildSourceView(string Vectors, int Blobs, string? Attributes, string? CalibrationQueries = null, IReadOnlyList<string>? CalibrationFilters = null);

/// <summary>GET /api/indexes/{index}/builds/{buildId}: where a job stands.</summary>
public sealed record BuildView
{
    public required string BuildId { get; init; }
    public required string Index { get; init; }
    public required string Status { get; init; }
    public required DateTimeOffset CreatedUtc { get; init; }
    public DateTimeOffset? StartedUtc { get; init; }
    public DateTimeOffset? FinishedUtc { get; init; }
    public double? ElapsedSeconds { get; init; }
    /// <summary>Elapsed time scaled by the share of work left (stages weighted by their usual share of a build).</summary>
    public double? EstimatedRemainingSeconds { get; init; }
    /// <summary>The published version, once the build succeeded.</summary>
    public string? Version { get; init; }
    /// <summary>Whether the version was current when the build finished (false: a newer build was already published).</summary>
    public bool? Current { get; init; }
    public required IReadOnlyList<StageProgress> Stages { get; init; }
    /// <summary>The index's partitions: the target at submission, then those some row chose (encode tasks each take a group of them).</summary>
    public int Partitions { get; init; }
    public required BuildVectors Vectors { get; init; }
    public long BytesWritten { get; init; }
    public required BuildSourceView Source { get; init; }
    public required BuildJobOptions Options { get; init; }
    public BuildError? Error { get; init; }

    public static BuildView From(BuildJob j, DateTimeOffset now)
    {
        double? elapsed = j.StartedUtc is { } s ? Math.Round(((j.FinishedUtc ?? now) - s).TotalSeconds, 3) : null;
        double fraction = j.FractionDone();
        double? remaining = BuildStatus.IsTerminal(j.Status) ? 0
            : elapsed is { } e && fraction > 0.01 ? Math.Round(e * (1 - fraction) / fraction, 1) : null;
        return new BuildView
        {
            BuildId = j.BuildId,
            Index = j.Index,
            Status = j.Status,
            CreatedUtc = j.CreatedUtc,
            StartedUtc = j.StartedUtc,
            FinishedUtc = j.FinishedUtc,
            ElapsedSeconds = elapsed,
            EstimatedRemainingSeconds = remaining,
            Version = j.Status == BuildStatus.Succeeded ? j.Version : null,
            Current = j.Current,
            Stages = j.Stages,
            Partitions = j.Partitions,
            Vectors = new BuildVectors(j.Count, j.Dimensions, j.VectorsAssigned, j.VectorsEncoded),
            BytesWritten = j.BytesWritten,
            Source = new BuildSourceView(j.Source.Vectors, j.Blobs.Count, j.Source.Attributes, j.Source.CalibrationQueries, j.Source.CalibrationFilters),
            Options = j.Options,
            Error = j.Error,
        };
    }
}

/// <summary>
/// GET /api/indexes/{index}/builds: the readable jobs, newest first, and apart those whose record cannot be read (absent when
/// none), so that one damaged record does not hide the rest.
/// </summary>
public sealed record BuildList(IReadOnlyList<BuildView> Builds, IReadOnlyList<DamagedBuild>? Damaged = null);

/// <summary>
/// A build whose job record (<c>{index}/builds/{buildId}/job.json</c>) is not JSON or not a job's shape: <c>record</c> names
/// the blob and <c>problem</c> says what is wrong (GET of the build answers the same as a 500 problem).
/// </summary>
public sealed record DamagedBuild(string BuildId, string Record, string Problem);

/// <summary>The answer a queue-triggered function gives the Functions host (custom-handler protocol).</summary>
public sealed record InvocationResult(Dictionary<string, string> Outputs, IReadOnlyList<string> Logs, string? ReturnValue);

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, NumberHandling = JsonNumberHandling.Strict)]
[JsonSerializable(typeof(BuildRequest))]
[JsonSerializable(typeof(BuildAccepted))]
[JsonSerializable(typeof(BuildView))]
[JsonSerializable(typeof(BuildList))]
public sealed partial class BuildApiJson : JsonSerializerContext;

/// <summary>The host reads these names as they are (PascalCase), and ReturnValue must be present even when null.</summary>
[JsonSerializable(typeof(InvocationResult))]
public sealed partial class InvocationJson : JsonSerializerContext;
