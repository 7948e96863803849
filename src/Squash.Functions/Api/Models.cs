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
    /// <summary>Overrides the app's tree branching factor b for this query (1..16).</summary>
    public int? Branching { get; init; }
    /// <summary>Overrides the app's tree depth L for this query (0..4).</summary>
    public int? Depth { get; init; }
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
    public int ColdInstances { get; init; }
    public int WarmInstances { get; init; }
    public int CacheHits { get; init; }
    public int CacheMisses { get; init; }
    /// <summary>Flex Consumption estimate: Σ invocation seconds × instance GB × $/GB-s + invocations × $/execution (a batch shares it).</summary>
    public double EstimatedCostUsd { get; init; }
    public double Milliseconds { get; init; }

    public static QueryStatsDto From(QueryStats s, ScanResponse r, int nodes, int memoryMb, double ms) => new()
    {
        ColdInstances = r.ColdInstances,
        WarmInstances = r.WarmInstances,
        CacheHits = r.CacheHits,
        CacheMisses = r.CacheMisses,
        EstimatedCostUsd = r.BusyMilliseconds / 1000 * memoryMb / 1024.0 * 0.000026 + (r.Invocations) * 0.40 / 1e6,
        PartitionsPlanned = s.PartitionsPlanned,
        PartitionsScanned = s.PartitionsScanned,
        PartitionsSkippedByBound = s.PartitionsSkippedByBound,
        VectorsConsidered = s.VectorsConsidered,
        AfterHamming = s.AfterHamming,
        AfterLowerBound = s.AfterLowerBound,
        Reranked = s.Reranked,
        BytesTouched = s.BytesTouched,
        BytesRead = r.BytesRead,
        Invocations = r.Invocations,
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
    /// <summary>Invocations that were the first on their instance (a cold start).</summary>
    public int ColdInstances { get; init; }
    public int WarmInstances { get; init; }
    /// <summary>Partitions found already decoded in memory, and partitions read from the store.</summary>
    public int CacheHits { get; init; }
    public int CacheMisses { get; init; }
    /// <summary>Wall time of every invocation in the subtree, added up (what GB-s billing counts).</summary>
    public double BusyMilliseconds { get; init; }
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
