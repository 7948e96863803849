using Squash.Search.Filters;

namespace Squash.Search;

/// <summary>
/// Query-time knobs. The defaults reach recall@10 ≥ 0.95 on Fashion-MNIST (see bench/README.md).
/// </summary>
public sealed record SearchOptions
{
    public const int MaxK = 10_000;
    /// <summary>The k of a query that names none (the HTTP API's, the CLI's).</summary>
    public const int DefaultK = 10;
    /// <summary>H is a percentage: 100 keeps every vector (the prune is off).</summary>
    public const double MaxHammingKeepPercent = 100;
    /// <summary>Largest CF accepted: far past the point where every partition is visited.</summary>
    public const double MaxCentroidFactor = 1_000;
    /// <summary>Largest R accepted; K·R then stays far inside 32 bits, and is computed in 64 anyway (<see cref="RerankCandidates"/>).</summary>
    public const int MaxRerankFactor = 1_000;

    /// <summary>The recall target front ends ask for when the user sets neither a target nor CF and R.</summary>
    public const double DefaultRecall = 0.95;

    public int K { get; init; } = DefaultK;
    /// <summary>
    /// A recall@K target in (0, 1]: when set, the plan (CF and R) comes from the index's build-time calibration
    /// (<see cref="RecallPlanner"/>) and <see cref="CentroidFactor"/> and <see cref="RerankFactor"/> are ignored; 1 means exact.
    /// Null: the plan is CF and R as given.
    /// </summary>
    public double? Recall { get; init; }
    /// <summary>CF: visit every partition whose centroid is within CF × the nearest centroid distance.</summary>
    public double CentroidFactor { get; init; } = 1.3;
    /// <summary>
    /// H: percentage of a partition's vectors kept by the sign-code Hamming prune (100 disables it).
    /// Off by default: on Fashion-MNIST it removed mostly vectors the lower bound rejects cheaply anyway
    /// and cost recall (bench/README.md has the sweep).
    /// </summary>
    public double HammingKeepPercent { get; init; } = MaxHammingKeepPercent;
    /// <summary>Sign bits compared by the Hamming prune: the leading (highest-energy) coded dimensions only, whose signs carry the signal.</summary>
    public int HammingBits { get; init; } = 64;
    /// <summary>R: each partition re-ranks at most K·R candidates by exact distance, chosen by lower bound.</summary>
    public int RerankFactor { get; init; } = 2;
    /// <summary>K·R, the re-rank cap per partition, computed in 64 bits and clamped to <see cref="int.MaxValue"/>.</summary>
    public int RerankCandidates => (int)Math.Min((long)K * RerankFactor, int.MaxValue);
    /// <summary>
    /// The most partitions an unfiltered query's plan scans (never fewer than hold K vectors); null: as many as CF selects.
    /// A filtered query plans by its filter's estimates and ignores it. Set by a recall target's plan where the calibration
    /// found a capped plan cheaper (<see cref="RecallPlanner"/>).
    /// </summary>
    public int? MaxPartitions { get; init; }
    /// <summary>Why a front end refuses <see cref="MaxPartitions"/> beside a filter (after the field's or flag's name).</summary>
    public const string MaxPartitionsUnfilteredOnly =
        "applies to unfiltered queries only: a filtered query's plan walks the partitions until its filter's estimated matches are reached";
    /// <summary>Exact mode: every partition, no Hamming prune, no re-rank cap: the answer equals brute force.</summary>
    public bool Exact { get; init; }
    /// <summary>A filter compiled against this index (<see cref="OpenedIndex.Filters"/>); null: no filter.</summary>
    public CompiledFilter? Filter { get; init; }
    /// <summary>
    /// The planner's safety margin: partitions past the CF threshold keep being added until the estimated
    /// matches reach this × K.
    /// </summary>
    public double FilterMargin { get; init; } = DefaultFilterMargin;
    public const double DefaultFilterMargin = 2;
    /// <summary>Filtered queries: let the cost rule choose (Auto), or force a strategy (tests, benchmarks).</summary>
    public FilterStrategy FilterStrategy { get; init; } = FilterStrategy.Auto;
    /// <summary>
    /// Row numbers no scan may return (null: none): a strong read's rows that the log tail replaced or deleted. They are
    /// dropped before any stage, like rows a filter rejects, so they never take a re-rank slot or a place in the answer.
    /// </summary>
    public IReadOnlySet<long>? Excluded { get; init; }

    public void Validate()
    {
        if (K < 1 || K > MaxK) throw new ArgumentOutOfRangeException(nameof(K), K, $"k must be between 1 and {MaxK:N0}");
        if (Recall is { } target && !(target > 0 && target <= 1)) throw new ArgumentOutOfRangeException(nameof(Recall), target, "the recall target must be in (0, 1]");
        if (!(CentroidFactor >= 1 && CentroidFactor <= MaxCentroidFactor)) throw new ArgumentOutOfRangeException(nameof(CentroidFactor), CentroidFactor, $"the centroid factor must be between 1 and {MaxCentroidFactor:N0}");
        if (!(HammingKeepPercent > 0 && HammingKeepPercent <= MaxHammingKeepPercent)) throw new ArgumentOutOfRangeException(nameof(HammingKeepPercent), HammingKeepPercent, $"the Hamming keep percentage must be in (0, {MaxHammingKeepPercent}]");
        if (HammingBits < 1) throw new ArgumentOutOfRangeException(nameof(HammingBits), HammingBits, "the Hamming bit count must be ≥ 1");
        if (!(FilterMargin >= 1) || double.IsInfinity(FilterMargin)) throw new ArgumentOutOfRangeException(nameof(FilterMargin), FilterMargin, "the filter margin must be a finite number ≥ 1");
        if (MaxPartitions is < 1) throw new ArgumentOutOfRangeException(nameof(MaxPartitions), MaxPartitions, "the partition cap must be ≥ 1");
        if (RerankFactor < 1 || RerankFactor > MaxRerankFactor) throw new ArgumentOutOfRangeException(nameof(RerankFactor), RerankFactor, $"the re-rank factor must be between 1 and {MaxRerankFactor:N0}");
    }
}

public enum FilterStrategy
{
    Auto,
    /// <summary>Ranked partitions with the code-level filter inside each scan.</summary>
    Partitions,
    /// <summary>Exact distances to every matching vector.</summary>
    Direct,
}

/// <summary>
/// What one query cost, level by level. Not sealed: the function app's answer stats extend it, so that a counter added
/// here (and to <see cref="Add"/>) is reported by every front end without another edit.
/// </summary>
public class QueryStats
{
    public int PartitionsPlanned { get; set; }
    public int PartitionsScanned { get; set; }
    /// <summary>Partitions skipped because centroid distance − radius already exceeded the k-th best distance.</summary>
    public int PartitionsSkippedByBound { get; set; }
    /// <summary>Vectors in the scanned partitions.</summary>
    public long VectorsConsidered { get; set; }
    /// <summary>Vectors kept by the Hamming prune.</summary>
    public long AfterHamming { get; set; }
    /// <summary>Vectors whose lower bound was completed without being pruned.</summary>
    public long AfterLowerBound { get; set; }
    /// <summary>Exact distances computed.</summary>
    public long Reranked { get; set; }
    /// <summary>Bytes of codes and raw vectors the query read (signs, code bytes, re-ranked rows).</summary>
    public long BytesTouched { get; set; }
    /// <summary>How the query was answered: "partitions" (ranked partitions), "direct" (a selective filter: exact distances on every matching vector) or "none" (no vector can match).</summary>
    public string Strategy { get; set; } = "partitions";
    /// <summary>Passes over the partition order: 2 when the first pass left the answer short and a follow-up pass ran.</summary>
    public int Passes { get; set; }
    /// <summary>Matches the planner estimated from the manifest statistics (filtered queries).</summary>
    public double EstimatedMatches { get; set; }
    /// <summary>Rows the code-level filter rejected before any distance work.</summary>
    public long FilterRejected { get; set; }
    /// <summary>Rows the exact filter recheck examined, and those it rejected (code-level false positives).</summary>
    public long FilterRechecked { get; set; }
    public long FilterRecheckRejected { get; set; }
    /// <summary>Rows a strong read excluded because the log tail replaced or deleted them (absent from answers when 0).</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault)]
    public long ExcludedRows { get; set; }
    /// <summary>
    /// True when the bounds prove the answer equals the exact one: everything the query passed over without an exact
    /// distance — unvisited partitions, rows pruned by bound, the Hamming prune or the K·R cap — has a lower bound at
    /// least the k-th distance found (<see cref="SearchEngine.Certify"/>). Exact answers always are.
    /// A verdict on the finished answer, set once at the end: <see cref="Add"/> leaves it alone.
    /// </summary>
    public bool Certified { get; set; }
    /// <summary>
    /// The recall target the plan was chosen for (null, left out: CF and R were given, or the query asked to be exact, which
    /// ignores a target). A target no calibrated plan reaches, or 1, stays: it chose the exact plan.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public double? RecallTarget { get; set; }
    /// <summary>
    /// The recall@K the build-time calibration measured for the chosen plan (1 for exact plans; null without a calibration);
    /// for a mix of two plans (<see cref="PlanShare"/>), the mix's mean over queries.
    /// </summary>
    public double? PredictedRecall { get; set; }
    /// <summary>
    /// The K of the recall@K <see cref="PredictedRecall"/> is: the calibrated K whose frontier the plan came from (the
    /// smallest measured K ≥ k for an unfiltered query, the calibration's K for a filtered band). Null (left out) for an
    /// exact plan and without a calibration.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public int? PredictedAtK { get; set; }
    /// <summary>
    /// A recall target met by mixing two frontier plans: the share of queries that run this query's plan (the other plan runs
    /// on the rest; which one a query runs follows from a hash of its vector and filter). Null (left out) for a single plan.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public double? PlanShare { get; set; }
    /// <summary>
    /// The CF and R of the plan this query ran (whether chosen for a target or given). Null (left out) for an exact plan:
    /// it scans every partition that can match and re-ranks every candidate, so no CF or R ran.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public double? CentroidFactor { get; set; }
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public int? RerankFactor { get; set; }
    /// <summary>The partition cap of the plan this query ran (<see cref="SearchOptions.MaxPartitions"/>); null (left out): none, or a filtered query.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public int? MaxPartitions { get; set; }
    /// <summary>
    /// The filter margin of the plan this query ran when it is not the default 2: a filtered band's cheapest calibrated
    /// plans walk partitions until the estimated matches reach this × K. Null (left out) at the default.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public double? FilterMargin { get; set; }
    /// <summary>
    /// For <see cref="Certified"/>: the smallest lower bound (internal squared distance) on anything a scan passed over
    /// without an exact distance (0 for rows dropped with no bound); null when it passed over nothing. Not part of an
    /// answer: the invocation tree carries it beside the stats.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public float? SkippedBound { get; set; }

    /// <summary>Records that something with this lower bound was passed over (keeps the smallest).</summary>
    public void NoteSkipped(float bound)
    {
        if (bound < (SkippedBound ?? float.PositiveInfinity)) SkippedBound = bound;
    }

    /// <summary>Adds every counter of <paramref name="o"/> (<see cref="Strategy"/> is a label, not a counter, and stays; <see cref="Certified"/> a verdict).</summary>
    public void Add(QueryStats o)
    {
        if (o.SkippedBound is { } skipped) NoteSkipped(skipped);
        Passes += o.Passes;
        EstimatedMatches += o.EstimatedMatches;
        FilterRejected += o.FilterRejected;
        FilterRechecked += o.FilterRechecked;
        FilterRecheckRejected += o.FilterRecheckRejected;
        ExcludedRows += o.ExcludedRows;
        PartitionsPlanned += o.PartitionsPlanned;
        PartitionsScanned += o.PartitionsScanned;
        PartitionsSkippedByBound += o.PartitionsSkippedByBound;
        VectorsConsidered += o.VectorsConsidered;
        AfterHamming += o.AfterHamming;
        AfterLowerBound += o.AfterLowerBound;
        Reranked += o.Reranked;
        BytesTouched += o.BytesTouched;
    }
}

/// <summary>
/// One answer: ids (row numbers in the index) and reported distances, best first; <see cref="Keys"/> holds the
/// user's string ids when the index has them (null entries for vectors without one).
/// </summary>
public sealed record SearchResult(long[] Ids, float[] Distances, QueryStats Stats)
{
    public string?[]? Keys { get; init; }
}
