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
        var top = new TopK(Math.Min(options.K, (int)Math.Max(1, Index.Manifest.Count)));
        var (order, dist) = RankPartitions(ctx);
        int selected = SelectCount(order, dist, Index.Routing.PartitionSizes, options);
        stats.PartitionsPlanned = selected;
        var scanner = _scanner.Value!;
        var radii = Index.Routing.Radii;
        for (int i = 0; i < selected; i++)
        {
            int p = order[i];
            // Safe skip: nothing in p can be closer than (centroid distance − radius).
            float gap = dist[p] - radii[p];
            if (gap > 0 && gap * gap > top.Threshold * (1 + 1e-5f))
            {
                stats.PartitionsSkippedByBound++;
                continue;
            }
            scanner.Scan(ctx, Index.Codes(p), Index.Vectors(p), top, options, stats);
        }
        return Finish(top, ctx, stats);
    }

    private SearchResult Finish(TopK top, QueryContext ctx, QueryStats stats)
    {
        var hits = top.ToSortedArray();
        var ids = new long[hits.Length];
        var distances = new float[hits.Length];
        for (int i = 0; i < hits.Length; i++)
        {
            ids[i] = hits[i].Id;
            distances[i] = Index.Space.ToReported(hits[i].Distance, ctx.InputSquaredNorm);
        }
        return new SearchResult(ids, distances, stats);
    }
}
