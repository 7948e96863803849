using Squash.Core.Collections;
using Squash.Core.Kernels;

namespace Squash.Search;

/// <summary>
/// The query pipeline in one process: partition selection by centroid distance, then one
/// <see cref="PartitionScanner"/> pass per partition, nearest partition first, all feeding one top-k.
/// Thread-safe: each thread gets its own scanner.
/// </summary>
public sealed class SearchEngine
{
    private readonly ThreadLocal<PartitionScanner> _scanner = new(() => new PartitionScanner());

    public SearchEngine(LoadedIndex index) => Index = index;

    public LoadedIndex Index { get; }

    /// <summary>Partitions in ascending centroid distance with those distances (Euclidean, internal space).</summary>
    public (int[] Order, float[] Distances) RankPartitions(QueryContext query)
    {
        var routing = Index.Routing;
        int p = routing.PartitionCount, d = routing.InternalDimensions;
        var dist = new float[p];
        for (int i = 0; i < p; i++) dist[i] = MathF.Sqrt(SquaredL2.Distance(query.Internal, routing.Centroids.AsSpan(i * d, d)));
        var order = new int[p];
        for (int i = 0; i < p; i++) order[i] = i;
        Array.Sort((float[])dist.Clone(), order);
        return (order, dist);
    }

    /// <summary>
    /// How many of the ranked partitions the options select (all in exact mode): those within CF × the
    /// nearest centroid distance.
    /// Past the CF threshold, partitions keep being added in distance order until they hold at least K
    /// vectors, so that an answer is never short when the index has K vectors.
    /// </summary>
    public static int SelectCount(ReadOnlySpan<int> order, ReadOnlySpan<float> distances, ReadOnlySpan<int> sizes, SearchOptions options)
    {
        if (options.Exact || order.Length == 0) return order.Length;
        double limit = distances[order[0]] * options.CentroidFactor;
        long held = sizes[order[0]];
        int count = 1;
        while (count < order.Length && (distances[order[count]] <= limit || held < options.K)) held += sizes[order[count++]];
        return count;
    }

    public SearchResult Search(ReadOnlySpan<float> query, SearchOptions options)
    {
        options.Validate();
        var ctx = new QueryContext(Index, query);
        var stats = new QueryStats();
        var top = NewTopK(options);
        var plan = Plan(ctx, options);
        stats.PartitionsPlanned = plan.Partitions.Length;
        ScanPartitions(ctx, plan.Partitions, plan.CentroidDistances, options, top, stats);
        return Finish(top.ToSortedArray(), ctx, stats);
    }

    public TopK NewTopK(SearchOptions options) => new(Math.Min(options.K, (int)Math.Max(1, Index.Manifest.Count)));

    /// <summary>The partitions a query visits, nearest centroid first, with every partition's centroid distance.</summary>
    public QueryPlan Plan(QueryContext query, SearchOptions options)
    {
        var (order, dist) = RankPartitions(query);
        int selected = SelectCount(order, dist, Index.Routing.PartitionSizes, options);
        return new QueryPlan(order[..selected], dist);
    }

    /// <summary>
    /// Scans the given partitions in order into <paramref name="top"/>: the unit a tree node runs. Any
    /// subset, in any grouping, gives the same final answer once the partial top-k lists are merged,
    /// because a candidate's fate never depends on the running threshold except where it could not
    /// have entered the answer anyway.
    /// </summary>
    public void ScanPartitions(QueryContext query, ReadOnlySpan<int> partitions, ReadOnlySpan<float> centroidDistances,
        SearchOptions options, TopK top, QueryStats stats)
    {
        var scanner = _scanner.Value!;
        var radii = Index.Routing.Radii;
        foreach (int p in partitions)
        {
            // Safe skip: nothing in p can be closer than (centroid distance − radius).
            float gap = centroidDistances[p] - radii[p];
            if (gap > 0 && gap * gap > top.Threshold * (1 + 1e-5f))
            {
                stats.PartitionsSkippedByBound++;
                continue;
            }
            scanner.Scan(query, Index.Codes(p), Index.Vectors(p), top, options, stats);
        }
    }

    /// <summary>Turns merged internal neighbours (squared L2) into the reported answer.</summary>
    public SearchResult Finish(ReadOnlySpan<Neighbor> best, QueryContext query, QueryStats stats)
    {
        var ids = new long[best.Length];
        var distances = new float[best.Length];
        for (int i = 0; i < best.Length; i++)
        {
            ids[i] = best[i].Id;
            distances[i] = Index.Space.ToReported(best[i].Distance, query.InputSquaredNorm);
        }
        return new SearchResult(ids, distances, stats);
    }
}

/// <summary>Partitions to visit (nearest centroid first) and the centroid distance of every partition.</summary>
public sealed record QueryPlan(int[] Partitions, float[] CentroidDistances);
