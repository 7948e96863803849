using Squash.Index.Model;
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
        var stats = new QueryStats { Passes = 1 };
        var top = new TopK(Math.Min(options.K, (int)Math.Max(1, Index.Manifest.Count)));
        var (order, dist) = RankPartitions(ctx);
        if (options.Filter is { MatchesAll: false }) return SearchFiltered(ctx, order, dist, top, options, stats);
        int selected = SelectCount(order, dist, Index.Routing.PartitionSizes, options);
        stats.PartitionsPlanned = selected;
        ScanPartitions(ctx, order.AsSpan(0, selected), dist, options, top, stats);
        return Finish(top, ctx, stats);
    }

    public TopK NewTopK(SearchOptions options) => new(Math.Min(options.K, (int)Math.Max(1, Index.Manifest.Count)));

    /// <summary>The partitions an unfiltered query visits, nearest centroid first, with every partition's centroid distance.</summary>
    public QueryPlan Plan(QueryContext query, SearchOptions options)
    {
        if (options.Filter is { MatchesAll: false }) throw new NotSupportedException("filtered queries are planned inside Search; the invocation tree carries unfiltered plans only");
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
    public void ScanPartitions(QueryContext query, ReadOnlySpan<int> partitions, float[] centroidDistances,
        SearchOptions options, TopK top, QueryStats stats)
    {
        var scanner = _scanner.Value!;
        foreach (int p in partitions) ScanUnlessFar(scanner, query, p, centroidDistances, top, options, stats);
    }

    /// <summary>The same for partitions the caller has fetched (e.g. from a segment cache), unfiltered queries only.</summary>
    public void ScanPartitions(QueryContext query, ReadOnlySpan<int> partitions, float[] centroidDistances,
        SearchOptions options, TopK top, QueryStats stats, Func<int, (PartitionCodes Codes, PartitionVectors Vectors)> partitionOf)
    {
        if (options.Filter is { MatchesAll: false }) throw new NotSupportedException("filtered scans read attributes through the index");
        var scanner = _scanner.Value!;
        foreach (int p in partitions)
        {
            if (CannotBeat(p, centroidDistances, top, stats)) continue;
            var (codes, vectors) = partitionOf(p);
            scanner.Scan(query, codes, vectors, null, top, options, stats);
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
        string?[]? keys = null;
        if (Index.Manifest.Attributes is { HasIds: true })
        {
            keys = new string?[ids.Length];
            for (int i = 0; i < ids.Length; i++) keys[i] = Index.KeyOf(ids[i]);
        }
        return new SearchResult(ids, distances, stats) { Keys = keys };
    }

    /// <summary>Scans p unless nothing in it can beat the current k-th distance (centroid distance − radius).</summary>
    private void ScanUnlessFar(PartitionScanner scanner, QueryContext ctx, int p, float[] dist, TopK top, SearchOptions options, QueryStats stats)
    {
        if (CannotBeat(p, dist, top, stats)) return;
        scanner.Scan(ctx, Index.Codes(p), Index.Vectors(p), options.Filter is null ? null : Index.Attributes(p), top, options, stats);
    }

    /// <summary>Safe skip: nothing in p can be closer than (centroid distance − radius); counted in the stats.</summary>
    private bool CannotBeat(int p, float[] dist, TopK top, QueryStats stats)
    {
        float gap = dist[p] - Index.Routing.Radii[p];
        if (gap <= 0 || gap * gap <= top.Threshold * (1 + 1e-5f)) return false;
        stats.PartitionsSkippedByBound++;
        return true;
    }

    /// <summary>
    /// Filtered search. Per partition the manifest statistics give an estimated match count (attributes taken
    /// as independent) and an upper bound on what the code-level filter can pass; partitions whose bound is 0
    /// are never read. Two strategies, chosen by estimated work (multiply-adds):
    /// <list type="bullet">
    /// <item><b>partitions</b>: partitions in centroid-distance order until both the CF threshold is passed and the
    /// estimated matches reach FilterMargin·K. The threshold is CF × the distance of the nearest partition that
    /// can match. If the answer is then short of K, a second pass continues down the same order until it is
    /// full or every partition has been visited, so with ≥ K matching vectors the answer always has K.
    /// Cost ≈ Σ over planned partitions of (m_p·m rotation + n_p code checks + est_p·m_p lower bounds
    /// + min(est_p, K·R)·D exact distances).</item>
    /// <item><b>direct</b>: every matching vector, exact distance (a brute force over the matching set).
    /// Cost ≈ Σ n_p code checks over the partitions that can match + est_total·D. Chosen when it is the cheaper one: selective filters, where the
    /// partition plan would wander over many partitions to find K matches.</item>
    /// </list>
    /// Both are exact in exact mode (the partition plan then visits every partition that can match).
    /// </summary>
    /// <summary>
    /// A partition anchors the CF threshold when its estimated match density is at least this share of the
    /// index-wide density. 1.0 sent independent filters (where every partition sits near the average, half of
    /// them below it) past the query's own partitions and visited ~100 of 1,000 partitions on 1M × 128;
    /// 0.5 still skips the near-empty partitions an anti-correlated filter (Fashion-MNIST labels) leaves.
    /// </summary>
    private const double AnchorDensity = 0.5;

    private SearchResult SearchFiltered(QueryContext ctx, int[] order, float[] dist, TopK top, SearchOptions options, QueryStats stats)
    {
        var filter = options.Filter!;
        var manifest = Index.Manifest;
        int p = order.Length;
        var est = new double[p];
        var upper = new long[p];
        double total = 0;
        for (int i = 0; i < p; i++)
        {
            (est[i], upper[i]) = filter.Estimate(manifest.Partitions[i]);
            total += est[i];
        }
        stats.EstimatedMatches = total;
        int firstMatching = Array.FindIndex(order, q => upper[q] > 0);
        if (firstMatching < 0)
        {
            stats.Strategy = "none";
            return Finish(top, ctx, stats);
        }

        // The partition plan (everything that can match, in exact mode).
        var plan = new List<int>();
        // The CF threshold is anchored on the nearest partition whose estimated match density is at least half the
        // index-wide one (AnchorDensity), not on the nearest partition: when the filter is anti-correlated with the query (it asks
        // for another class), nearby partitions hold a few stragglers and the true nearest matches sit in the
        // partitions where matches are dense, which a threshold anchored on the query's own cluster would miss.
        double density = total / Math.Max(1, manifest.Count);
        int anchor = firstMatching;
        for (int i = firstMatching; i < p; i++)
        {
            int q = order[i];
            if (upper[q] > 0 && est[q] >= AnchorDensity * density * manifest.Partitions[q].Count) { anchor = i; break; }
        }
        double limit = options.Exact ? double.PositiveInfinity : dist[order[anchor]] * options.CentroidFactor;
        double issued = 0, planCost = 0;
        int m = manifest.GlobalDimensions, d = manifest.InternalDimensions;
        for (int i = 0; i < p; i++)
        {
            int q = order[i];
            if (upper[q] == 0) continue;
            if (dist[q] > limit && issued >= options.FilterMargin * options.K) break;
            plan.Add(q);
            issued += est[q];
            var e = manifest.Partitions[q];
            planCost += (double)e.CodedDimensions * m + e.Count + est[q] * e.CodedDimensions + Math.Min(est[q], options.K * options.RerankFactor) * d;
        }
        // The direct scan reads codes only where something can match (upper > 0), like the plan.
        double directCost = total * d;
        for (int i = 0; i < p; i++) if (upper[i] > 0) directCost += manifest.Partitions[i].Count;
        stats.PartitionsPlanned = plan.Count;
        if (options.FilterStrategy == FilterStrategy.Direct || (options.FilterStrategy == FilterStrategy.Auto && directCost <= planCost))
        {
            stats.Strategy = "direct";
            ScanDirect(ctx, order, upper, top, filter, stats);
            return Finish(top, ctx, stats);
        }

        var scanner = _scanner.Value!;
        foreach (int q in plan) ScanUnlessFar(scanner, ctx, q, dist, top, options, stats);
        if (top.Count < top.Capacity)
        {
            // Follow-up pass: the estimates were optimistic. Keep going in distance order until the answer is
            // full, and then, as the first pass does, through every partition within CF × the distance at which
            // it filled: stopping right at "full" kept whatever far matches came first (recall 0.43 at 0.1 %).
            stats.Passes = 2;
            var visited = new HashSet<int>(plan);
            double fullAt = double.PositiveInfinity;
            for (int i = 0; i < p; i++)
            {
                int q = order[i];
                if (top.Count >= top.Capacity && double.IsPositiveInfinity(fullAt)) fullAt = dist[q] * options.CentroidFactor;
                if (dist[q] > fullAt) break;
                if (upper[q] == 0 || visited.Contains(q)) continue;
                stats.PartitionsPlanned++;
                ScanUnlessFar(scanner, ctx, q, dist, top, options, stats);
            }
        }
        return Finish(top, ctx, stats);
    }

    /// <summary>Exact distances to every vector that passes the filter (nearest partitions first, so the bound tightens early).</summary>
    private void ScanDirect(QueryContext ctx, int[] order, long[] upper, TopK top, Filters.CompiledFilter filter, QueryStats stats)
    {
        byte[] result = [];
        var q = ctx.Internal.AsSpan();
        foreach (int p in order)
        {
            if (upper[p] == 0) continue;
            var attrs = Index.Attributes(p)!;
            var vectors = Index.Vectors(p);
            var ids = Index.Codes(p).Ids;
            int n = attrs.Count, dims = vectors.Dimensions;
            if (result.Length < n) result = new byte[n];
            var codes = result.AsSpan(0, n);
            filter.EvaluateCodes(attrs, codes);
            stats.PartitionsScanned++;
            stats.VectorsConsidered += n;
            for (int i = 0; i < n; i++)
            {
                if (codes[i] == 0) { stats.FilterRejected++; continue; }
                if (codes[i] == 1)
                {
                    stats.FilterRechecked++;
                    if (!filter.Matches(attrs, i)) { stats.FilterRecheckRejected++; continue; }
                }
                float threshold = top.Threshold;
                float distance = SquaredL2Bounded.Distance(q, vectors.Data.AsSpan(i * dims, dims), threshold);
                stats.Reranked++;
                stats.BytesTouched += dims * sizeof(float);
                if (distance <= threshold) top.TryAdd(ids[i], distance);
            }
        }
    }

    private SearchResult Finish(TopK top, QueryContext ctx, QueryStats stats) => Finish(top.ToSortedArray(), ctx, stats);
}

/// <summary>Partitions to visit (nearest centroid first) and the centroid distance of every partition.</summary>
public sealed record QueryPlan(int[] Partitions, float[] CentroidDistances);
