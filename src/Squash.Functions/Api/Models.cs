using System.Text.Json;
using System.Text.Json.Serialization;
using Squash.Search;

namespace Squash.Functions.Api;

/// <summary>POST /api/indexes/{index}/query. Exactly one of <see cref="Vector"/> and <see cref="Vectors"/>.</summary>
public sealed record QueryRequest
{
    public float[]? Vector { get; init; }
    /// <summary>A batch: answered together, sharing one invocation tree.</summary>
    public float[][]? Vectors { get; init; }
    public int? K { get; init; }
    public QueryOptions? Options { get; init; }
}

public sealed record QueryOptions
{
    public bool? Exact { get; init; }
    public double? CentroidFactor { get; init; }
    public double? HammingKeepPercent { get; init; }
    public int? RerankFactor { get; init; }
}

public sealed record Hit(long Id, float Distance);

public sealed record QueryAnswer
{
    public required IReadOnlyList<Hit> Results { get; init; }
    /// <summary>False when a branch of the tree failed after retries; <see cref="MissingPartitions"/> names what was not scanned.</summary>
    public required bool Complete { get; init; }
    public required IReadOnlyList<int> MissingPartitions { get; init; }
    public required QueryStatsDto Stats { get; init; }
}

/// <summary>Batch answer: one entry per vector, in request order.</summary>
public sealed record BatchAnswer(IReadOnlyList<QueryAnswer> Answers);

public sealed record QueryStatsDto
{
    public int PartitionsPlanned { get; init; }
    public int PartitionsScanned { get; init; }
    public int PartitionsSkippedByBound { get; init; }
    public long VectorsConsidered { get; init; }
    public long AfterHamming { get; init; }
    public long AfterLowerBound { get; init; }
    public long Reranked { get; init; }
    public long BytesTouched { get; init; }
    public long BytesRead { get; init; }
    /// <summary>Function invocations the query caused (the coordinator included).</summary>
    public int Invocations { get; init; }
    public int TreeNodes { get; init; }
    public double Milliseconds { get; init; }

    public static QueryStatsDto From(QueryStats s, int invocations, int nodes, long bytesRead, double ms) => new()
    {
        PartitionsPlanned = s.PartitionsPlanned,
        PartitionsScanned = s.PartitionsScanned,
        PartitionsSkippedByBound = s.PartitionsSkippedByBound,
        VectorsConsidered = s.VectorsConsidered,
        AfterHamming = s.AfterHamming,
        AfterLowerBound = s.AfterLowerBound,
        Reranked = s.Reranked,
        BytesTouched = s.BytesTouched,
        BytesRead = bytesRead,
        Invocations = invocations,
        TreeNodes = nodes,
        Milliseconds = Math.Round(ms, 3),
    };
}

public sealed record IndexInfo(string Name, string Version, int Dimensions, string Metric, long Count, int Partitions, DateTimeOffset CreatedUtc);

/// <summary>Internal: what a tree node is asked to do. Carries the query, options and plan only — never segment data.</summary>
public sealed record ScanRequest
{
    public required string Version { get; init; }
    public required float[][] Vectors { get; init; }
    public required int K { get; init; }
    public required QueryOptions Options { get; init; }
    /// <summary>Per query, the partitions its plan visits (nodes scan the intersection with their own).</summary>
    public required int[][] Plans { get; init; }
    public required ScanNode Node { get; init; }
}

/// <summary>A node of the invocation tree: the partitions it scans itself and its children.</summary>
public sealed record ScanNode(int Id, int[] Partitions, ScanNode[] Children)
{
    public IEnumerable<int> AllPartitions() => Partitions.Concat(Children.SelectMany(c => c.AllPartitions()));
    public int Count() => 1 + Children.Sum(c => c.Count());
}

public sealed record ScanResponse
{
    /// <summary>Per query: the partial top-k, internal squared distances.</summary>
    public required Neighbour[][] Neighbours { get; init; }
    public required QueryStats[] Stats { get; init; }
    public required int[] MissingPartitions { get; init; }
    public required int Invocations { get; init; }
    public long BytesRead { get; init; }
}

public sealed record Neighbour(long Id, float D);

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(QueryRequest))]
[JsonSerializable(typeof(QueryAnswer))]
[JsonSerializable(typeof(BatchAnswer))]
[JsonSerializable(typeof(IndexInfo))]
[JsonSerializable(typeof(ScanRequest))]
[JsonSerializable(typeof(ScanResponse))]
[JsonSerializable(typeof(Dictionary<string, string>))]
public sealed partial class ApiJson : JsonSerializerContext;
