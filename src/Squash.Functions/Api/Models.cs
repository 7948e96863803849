using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Squash.Search;

namespace Squash.Functions.Api;

/// <summary>POST /api/indexes/{index}/query. Exactly one of <see cref="Vector"/> and <see cref="Vectors"/>.</summary>
public sealed record QueryRequest
{
    /// <summary>An array of numbers, or a string: base64 of the vector's float32 values, little-endian (as an upsert's).</summary>
    [JsonConverter(typeof(VectorJsonConverter))]
    public float[]? Vector { get; init; }
    /// <summary>A batch: answered together, sharing one invocation tree. Each vector in either form of <see cref="Vector"/>.</summary>
    [JsonConverter(typeof(VectorListJsonConverter))]
    public float[][]? Vectors { get; init; }
    public int? K { get; init; }
    /// <summary>A filter in the Pinecone / S3 Vectors JSON convention; no result ever violates it.</summary>
    public JsonElement? Filter { get; init; }
    /// <summary>Attributes to return with each result (names from the index's schema).</summary>
    public string[]? Include { get; init; }
    public QueryOptions? Options { get; init; }
}

public sealed record QueryOptions
{
    public bool? Exact { get; init; }
    /// <summary>Recall target in (0, 1] (default 0.95), calibrated as recall@K at K = 1, 2, 5, 10, 20, 50 and 100 for unfiltered and filtered queries (the smallest K ≥ k plans): the index's build-time calibration picks CF and R for it. Not with centroidFactor, rerankFactor or maxPartitions.</summary>
    public double? Recall { get; init; }
    public double? CentroidFactor { get; init; }
    public double? HammingKeepPercent { get; init; }
    public int? RerankFactor { get; init; }
    /// <summary>Part of a plan set by hand: the most partitions an unfiltered query scans (never fewer than hold k vectors); not with a filter.</summary>
    public int? MaxPartitions { get; init; }
    /// <summary>Overrides the app's tree branching factor b for this query (1..16; the tree's b + … + b^L nodes at most Squash__MaxTreeNodes).</summary>
    public int? Branching { get; init; }
    /// <summary>Overrides the app's tree depth L for this query (0..4).</summary>
    public int? Depth { get; init; }
    /// <summary>
    /// "eventual" (default): the published version. "strong": that version plus the write-ahead log past its watermark,
    /// so the answer sees every write acknowledged before the query.
    /// </summary>
    public string? Consistency { get; init; }
}

/// <summary>
/// One result. <see cref="Id"/> is the id given at build time (a string) or, for an index built without ids, the
/// row number; <see cref="Row"/> is always the row number (the position in the vectors file).
/// </summary>
public sealed record Hit(JsonNode Id, long Row, float Distance)
{
    /// <summary>The attributes named in the request's <c>include</c>; absent values are left out.</summary>
    public JsonObject? Attributes { get; init; }
}

public sealed record QueryAnswer
{
    public required IReadOnlyList<Hit> Results { get; init; }
    /// <summary>False when a branch of the tree failed after retries; <see cref="MissingPartitions"/> names what was not scanned.</summary>
    public required bool Complete { get; init; }
    public required IReadOnlyList<int> MissingPartitions { get; init; }
    /// <summary>The write-ahead log's watermark in the version that answered (0 for a version built from files).</summary>
    public long IndexedSequence { get; init; }
    /// <summary>Strong reads: the items (upserts, deletes, deleteWheres) of the log tail read past the watermark.</summary>
    public int? TailItems { get; init; }
    public required AnswerStats Stats { get; init; }
}

/// <summary>Batch answer: one entry per vector, in request order.</summary>
public sealed record BatchAnswer(IReadOnlyList<QueryAnswer> Answers);

/// <summary>
/// One answer's stats: every counter of the engine's <see cref="QueryStats"/>, inherited so that a new counter reaches
/// the answer without an edit here, then what the invocation tree did (ordered after the engine's counters).
/// </summary>
public sealed class AnswerStats : QueryStats
{
    /// <summary>The engine's estimate as reported: left out when no filter was estimated, and one decimal is all an estimate is worth.</summary>
    [JsonPropertyOrder(1)]
    public new double? EstimatedMatches { get; private init; }
    [JsonPropertyOrder(2)] public long BytesRead { get; init; }
    /// <summary>Function invocations the query caused (the coordinator included).</summary>
    [JsonPropertyOrder(2)] public int Invocations { get; init; }
    [JsonPropertyOrder(2)] public int TreeNodes { get; init; }
    [JsonPropertyOrder(2)] public int ColdInstances { get; init; }
    [JsonPropertyOrder(2)] public int WarmInstances { get; init; }
    [JsonPropertyOrder(2)] public int CacheHits { get; init; }
    [JsonPropertyOrder(2)] public int CacheMisses { get; init; }
    /// <summary>Time per tree level (0 = the coordinator): the slowest node's wall and own-work time.</summary>
    [JsonPropertyOrder(2)] public IReadOnlyList<LevelTiming> Levels { get; init; } = [];
    /// <summary>The marginal cost of the request at the current load (<see cref="QueryCost"/>'s total; a batch shares it).</summary>
    [JsonPropertyOrder(2)] public double EstimatedCostUsd { get; init; }
    /// <summary>What <see cref="EstimatedCostUsd"/> is made of.</summary>
    [JsonPropertyOrder(2)] public QueryCost Cost { get; init; } = new();
    /// <summary>The tree shape the query ran with and who chose it; with Squash__Objective, the planner's predicted cost and time.</summary>
    [JsonPropertyOrder(2)] public ShapeStats? Shape { get; init; }
    [JsonPropertyOrder(2)] public double Milliseconds { get; init; }

    /// <summary>The engine's figures for one query (<paramref name="engine"/>) with the tree's for the whole request (<paramref name="tree"/>).</summary>
    /// <param name="outsideTree">Storage operations of the request that no tree node reported (opening the index, a log tail).</param>
    public static AnswerStats From(QueryStats engine, ScanResponse tree, int nodes, int memoryMb, double ms, Squash.Storage.StorageOperations outsideTree = default,
        Tree.TreeShapeChoice? shape = null, bool storageBilled = true)
    {
        var cost = QueryCost.Of(tree.BilledMilliseconds, memoryMb, tree.Invocations, tree.StorageOperations + outsideTree, storageBilled)
            .WithDropped(tree.DroppedAttempts, tree.DroppedBilledMilliseconds, memoryMb);
        var stats = new AnswerStats
        {
            Strategy = engine.Strategy,
            Certified = engine.Certified,
            RecallTarget = engine.RecallTarget,
            PredictedRecall = engine.PredictedRecall,
            PredictedAtK = engine.PredictedAtK,
            PlanShare = engine.PlanShare,
            CentroidFactor = engine.CentroidFactor,
            RerankFactor = engine.RerankFactor,
            MaxPartitions = engine.MaxPartitions,
            FilterMargin = engine.FilterMargin,
            EstimatedMatches = engine.Strategy == "partitions" && engine.EstimatedMatches == 0 ? null : Math.Round(engine.EstimatedMatches, 1),
            BytesRead = tree.BytesRead,
            Invocations = tree.Invocations,
            TreeNodes = nodes,
            ColdInstances = tree.ColdInstances,
            WarmInstances = tree.WarmInstances,
            CacheHits = tree.CacheHits,
            CacheMisses = tree.CacheMisses,
            Levels = tree.Levels,
            EstimatedCostUsd = cost.TotalUsd,
            Cost = cost,
            Shape = shape is null ? null : new ShapeStats(shape.Branching, shape.Depth, shape.ChosenBy, shape.PredictedCostUsd, shape.PredictedMs)
            {
                PredictedP99Ms = shape.PredictedP99Ms,
                Model = shape.Constants is { } c ? new PlannerModelStats(Math.Round(c.HopMs, 4), Math.Round(c.PartitionScanMs, 5),
                    c.TailMs is { } t ? Math.Round(t, 3) : null, c.Samples) : null,
            },
            Milliseconds = Math.Round(ms, 3),
        };
        stats.Add(engine);
        stats.Passes = Math.Max(1, stats.Passes);
        return stats;
    }
}

/// <summary>A query's tree shape: branching, depth (0: the coordinator scanned by itself), who chose it, and the planner's predictions.</summary>
public sealed record ShapeStats(int Branching, int Depth, string ChosenBy, double? PredictedCostUsd, double? PredictedMs)
{
    /// <summary>The planner's p99 for the chosen shape (its typical time + the measured tail).</summary>
    public double? PredictedP99Ms { get; init; }
    /// <summary>The constants the planner used: measured by the coordinator instance (samples &gt; 0) or the configured priors.</summary>
    public PlannerModelStats? Model { get; init; }
}

/// <summary>The planner's time constants as it used them: hop per level, scan per partition, the p99 tail (null: not measured yet), and the samples.</summary>
public sealed record PlannerModelStats(double HopMs, double PartitionScanMs, double? TailMs, int Samples);

/// <summary>
/// The marginal cost of one request at the current load, in its parts: compute is the billed time the request's invocations
/// added to their instances' activity periods (an invocation that woke an idle instance: its 1,000 ms minimum; one on an
/// instance already active: only the 100 ms steps it ran past what was billed), executions are its invocations, storage its
/// blob (and queue) operations, each at <see cref="PriceTable"/>'s prices. The compute of scan attempts whose answers were
/// dropped is not measured but estimated (<see cref="DroppedComputeUsd"/>), and kept apart; the total includes it.
/// </summary>
public sealed record QueryCost
{
    /// <summary>Measured: the compute the answered invocations added (<see cref="BilledMilliseconds"/>).</summary>
    public double ComputeUsd { get; init; }
    /// <summary>Estimated: the compute of the dropped attempts (<see cref="DroppedBilledMilliseconds"/>).</summary>
    public double DroppedComputeUsd { get; init; }
    public double ExecutionsUsd { get; init; }
    public double StorageUsd { get; init; }
    /// <summary>Compute, dropped attempts' compute, executions and storage.</summary>
    public double TotalUsd { get; init; }
    /// <summary>Billed instance time the request added, in milliseconds (× the instance memory gives the GB-s).</summary>
    public double BilledMilliseconds { get; init; }
    /// <summary>Scan attempts whose answers were dropped (a hedge that lost, a failed try); each is also one of <see cref="Executions"/>.</summary>
    public int DroppedAttempts { get; init; }
    /// <summary>Their estimated billed time: each one's elapsed time as a period of its own (≥ 1,000 ms, rounded up to 100 ms).</summary>
    public double DroppedBilledMilliseconds { get; init; }
    public int Executions { get; init; }
    public long BlobReads { get; init; }
    public long BlobWrites { get; init; }
    public long BlobLists { get; init; }
    public long BlobOther { get; init; }
    /// <summary>False for a folder store (dir:): its operations are counted as Blob Storage would bill them, but priced at $0.</summary>
    public bool StorageBilled { get; init; } = true;

    public static QueryCost Of(double billedMs, int memoryMb, int executions, Squash.Storage.StorageOperations storage, bool storageBilled = true)
    {
        double compute = PriceTable.ComputeCost(billedMs, memoryMb), runs = PriceTable.ExecutionsCost(executions);
        double stored = storageBilled ? PriceTable.StorageCost(storage) : 0;
        return new QueryCost
        {
            ComputeUsd = compute, ExecutionsUsd = runs, StorageUsd = stored, TotalUsd = compute + runs + stored, StorageBilled = storageBilled,
            BilledMilliseconds = Math.Round(billedMs, 3), Executions = executions,
            BlobReads = storage.BlobReads, BlobWrites = storage.BlobWrites, BlobLists = storage.BlobLists, BlobOther = storage.BlobOther,
        };
    }

    /// <summary>This cost with the estimated compute of <paramref name="attempts"/> dropped attempts added (and in the total).</summary>
    public QueryCost WithDropped(int attempts, double billedMs, int memoryMb)
    {
        double dropped = PriceTable.ComputeCost(billedMs, memoryMb);
        return this with
        {
            DroppedAttempts = attempts, DroppedBilledMilliseconds = Math.Round(billedMs, 3), DroppedComputeUsd = dropped,
            TotalUsd = ComputeUsd + dropped + ExecutionsUsd + StorageUsd,
        };
    }
}

/// <summary>
/// GET /api/indexes/{index}. <see cref="IndexedSequence"/> is the write-ahead log's watermark in the current version,
/// <see cref="LatestSequence"/> the newest acknowledged write, <see cref="Lag"/> the batches between them and
/// <see cref="LagSeconds"/> the age of the oldest of those (absent when nothing waits).
/// </summary>
public sealed record IndexInfo(string Name, string Version, int Dimensions, string Metric, long Count, int Partitions, DateTimeOffset CreatedUtc,
    long IndexedSequence = 0, long LatestSequence = 0, long Lag = 0, double? LagSeconds = null, RebuildInfo? Rebuild = null);

/// <summary>
/// The index's last full rebuild (absent when it never had one): its job, its status (the job's while it runs, "built" while
/// its version waits for ingest, then published, failed, cancelled or superseded), the log position it covers, and the
/// version ingest published from it.
/// </summary>
public sealed record RebuildInfo(string BuildId, string Status, long CoversSequence, string? PublishedVersion = null, string? Reason = null);

/// <summary>Internal: what a tree node is asked to do. Carries the query, options and plan only — never segment data.</summary>
public sealed record ScanRequest
{
    public required string Version { get; init; }
    public required float[][] Vectors { get; init; }
    public required int K { get; init; }
    public required QueryOptions Options { get; init; }
    /// <summary>The query's filter as the client sent it; every node compiles it against the same index version.</summary>
    public JsonElement? Filter { get; init; }
    /// <summary>Per query, the filter strategy the coordinator chose ("direct" or "partitions"); nodes never re-decide.</summary>
    public string[]? Strategies { get; init; }
    /// <summary>
    /// Per query, the re-rank factor and exact mode of the plan the coordinator chose for it (a recall target's queries in one
    /// batch may run different plans: a mix of two, or filtered bands); absent: <see cref="Options"/>' for every query.
    /// </summary>
    public int[]? RerankFactors { get; init; }
    public bool[]? ExactPlans { get; init; }
    /// <summary>Attributes to attach to the results (the node that found a result reads them).</summary>
    public string[]? Include { get; init; }
    /// <summary>Attach the user's string ids to results (the index was built with ids).</summary>
    public bool Keys { get; init; }
    /// <summary>
    /// Row numbers no node may return (a strong read's rows that the log tail replaced or deleted), as
    /// <see cref="Squash.Search.Writes.RowNumberCodec"/> text: base64url (no padding) of LEB128 varints, the first row and then each gap − 1.
    /// </summary>
    public string? ExcludedRows { get; init; }
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
    public required ScanHit[][] Neighbours { get; init; }
    public required QueryStats[] Stats { get; init; }
    /// <summary>
    /// Per query: the smallest lower bound (internal squared distance) on what the subtree's scans passed over without
    /// an exact distance (<see cref="QueryStats.SkippedBound"/>), null when nothing; the coordinator decides
    /// <c>certified</c> from it. Absent (an answer from a node that does not report it): nothing is certified.
    /// </summary>
    public float?[]? SkippedBounds { get; init; }
    public required int[] MissingPartitions { get; init; }
    public required int Invocations { get; init; }
    public long BytesRead { get; init; }
    /// <summary>Invocations that were the first on their instance (a cold start).</summary>
    public int ColdInstances { get; init; }
    public int WarmInstances { get; init; }
    /// <summary>Partitions found already decoded in memory, and partitions read from the store.</summary>
    public int CacheHits { get; init; }
    public int CacheMisses { get; init; }
    /// <summary>Wall time of every invocation in the subtree, added up.</summary>
    public double BusyMilliseconds { get; init; }
    /// <summary>
    /// What the subtree's invocations added to their instances' billed activity periods (<see cref="InstanceActivity.Attribute"/>):
    /// 1,000 ms for one that woke an idle instance, 0 for one inside time already billed.
    /// </summary>
    public double BilledMilliseconds { get; init; }
    /// <summary>
    /// Scan attempts in the subtree whose answers were dropped (a hedge that lost, a failed try): counted in
    /// <see cref="Invocations"/> too, but their billed time never reached anyone (<see cref="Tree.ScanAttempts"/>).
    /// </summary>
    public int DroppedAttempts { get; init; }
    /// <summary>The estimated billed time of <see cref="DroppedAttempts"/>: each one's elapsed time as an activity period of its own (≥ 1,000 ms).</summary>
    public double DroppedBilledMilliseconds { get; init; }
    /// <summary>Storage operations of the subtree's invocations, by billing class.</summary>
    public Squash.Storage.StorageOperations StorageOperations { get; init; }
    /// <summary>Per tree level below and including this node: the slowest node's times.</summary>
    public LevelTiming[] Levels { get; init; } = [];
}

/// <summary>One tree level: how many nodes ran there, the slowest wall time (children included) and the slowest own work (fetch + scan).</summary>
public sealed record LevelTiming(int Level, int Nodes, double WallMs, double WorkMs, double FetchMs)
{
    public static LevelTiming[] Merge(LevelTiming[] into, IEnumerable<LevelTiming> more)
    {
        var byLevel = into.ToDictionary(l => l.Level);
        foreach (var l in more)
            byLevel[l.Level] = byLevel.TryGetValue(l.Level, out var e)
                ? new LevelTiming(l.Level, e.Nodes + l.Nodes, Math.Max(e.WallMs, l.WallMs), Math.Max(e.WorkMs, l.WorkMs), Math.Max(e.FetchMs, l.FetchMs))
                : l;
        return byLevel.Values.OrderBy(l => l.Level).ToArray();
    }
}

/// <summary>
/// One entry of a /scan response's <c>neighbours</c> lists (<c>{"id","d","key","attributes"}</c>): a partial result with its
/// internal squared distance and what the node that found it knows (user id, attributes). The engine's own result type is
/// <see cref="Squash.Core.Collections.Neighbor"/>; this one only travels between tree nodes.
/// </summary>
public sealed record ScanHit(long Id, float D)
{
    public string? Key { get; init; }
    public JsonObject? Attributes { get; init; }
}

// Strict numbers: the web defaults would read "k":"5" as 5.
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, NumberHandling = JsonNumberHandling.Strict)]
[JsonSerializable(typeof(QueryRequest))]
[JsonSerializable(typeof(QueryAnswer))]
[JsonSerializable(typeof(BatchAnswer))]
[JsonSerializable(typeof(IndexInfo))]
[JsonSerializable(typeof(RebuildInfo))]
[JsonSerializable(typeof(ScanRequest))]
[JsonSerializable(typeof(ScanResponse))]
[JsonSerializable(typeof(QueryCost))]
[JsonSerializable(typeof(Dictionary<string, string>))]
[JsonSerializable(typeof(JsonObject))]
public sealed partial class ApiJson : JsonSerializerContext;
