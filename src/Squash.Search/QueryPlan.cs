using Squash.Index.Model;

namespace Squash.Search;

/// <summary>
/// A query's plan as a sequence of passes, so that an invocation tree can run it: the first pass is
/// <see cref="Partitions"/>; after each pass the caller merges the partial top-k lists and asks
/// <see cref="SearchEngine.NextPass"/> for more with the merged answer's size only.
/// Mutable: <see cref="SearchEngine.NextPass"/> advances it, so one plan serves one query.
/// </summary>
public sealed class QueryPlan
{
    internal QueryPlan(int[] partitions, float[] centroidDistances, string strategy, int target, QueryStats stats,
        int[] order, double[]? estimates, bool[]? canMatch, int cursor, SearchOptions options, float[]? keys = null)
    {
        Keys = keys ?? centroidDistances;
        Partitions = partitions;
        CentroidDistances = centroidDistances;
        Strategy = strategy;
        Target = target;
        Stats = stats;
        Order = order;
        Estimates = estimates;
        CanMatch = canMatch;
        Cursor = cursor;
        Options = options;
    }

    /// <summary>The first pass: partitions nearest centroid first.</summary>
    public int[] Partitions { get; }
    /// <summary>Centroid distance of every partition (internal space), as <see cref="SearchEngine.ScanPartitions(QueryContext, ReadOnlySpan{int}, float[], SearchOptions, TopK, QueryStats, Func{int, PartitionData})"/> takes it.</summary>
    public float[] CentroidDistances { get; }
    /// <summary>"partitions", "direct" (exact distances on every matching vector) or "none" (nothing can match).</summary>
    public string Strategy { get; }
    /// <summary>The answer size at which passes stop: min(k, vectors in the index).</summary>
    public int Target { get; }
    /// <summary>Planner figures (estimated matches, strategy, partitions planned, passes); scans add their own.</summary>
    public QueryStats Stats { get; }
    /// <summary>Passes handed out so far (1 after planning).</summary>
    public int Passes => Stats.Passes;

    /// <summary>Every partition, in ascending <see cref="Keys"/>.</summary>
    internal int[] Order { get; }
    /// <summary>What later passes rank and threshold by: a filter's value key (<see cref="SearchEngine.ValueOrder"/>), else the centroid distances.</summary>
    internal float[] Keys { get; }
    /// <summary>Estimated matches per partition; null without a filter (partition sizes then).</summary>
    internal double[]? Estimates { get; }
    /// <summary>False where the code-level filter can pass nothing: such partitions are never planned; null without a filter.</summary>
    internal bool[]? CanMatch { get; }
    /// <summary>Position in <see cref="Order"/> up to which partitions were handed out.</summary>
    internal int Cursor { get; set; }
    internal double CentroidFactor => Options.CentroidFactor;
    internal double Margin => Options.FilterMargin;
    /// <summary>Planned in exact mode: every partition that can match, no prune that lacks a bound.</summary>
    internal bool Exact => Options.Exact;

    /// <summary>The strategy as the scan nodes must receive it (they never choose one themselves).</summary>
    public FilterStrategy FilterStrategy => Strategy == "direct" ? FilterStrategy.Direct : FilterStrategy.Partitions;

    /// <summary>The options planned with: a recall target already turned into CF and R (or exact mode).</summary>
    public SearchOptions Options { get; }

    /// <summary>The options to send to the nodes that scan this plan's partitions.</summary>
    public SearchOptions NodeOptions() => Options with { FilterStrategy = FilterStrategy };
}
