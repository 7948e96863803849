using Squash.Search;

namespace Squash.Cli.Bench;

/// <summary>One answered query and what answering it read from the store.</summary>
/// <remarks><see cref="WholeSegmentBytes"/>: what reading the visited partitions' codes and raw vectors whole would have cost.</remarks>
public sealed record FetchedAnswer(SearchResult Result, long BytesRead, int CacheHits, int CacheMisses, int Requests, int Partitions, long WholeSegmentBytes = 0);

/// <summary>
/// The in-process cold path, run as a tree node runs it: plan, then per pass fetch only what the query needs
/// (codes and, for filters, attributes; then the re-ranked or matching rows by ranged reads, through the
/// index's cache) and scan; a filtered query short of k takes the engine's next pass.
/// </summary>
public static class FetchingSearch
{
    /// <param name="visitShare">When above 0, visit exactly this share of the partitions (nearest centroids first) instead of the CF plan:
    /// a fixed amount of work per query, for storage figures such as "bytes read by a query that visits 10 % of the partitions".</param>
    public static async Task<FetchedAnswer> SearchAsync(SearchEngine engine, float[] query, SearchOptions options, CancellationToken ct, double visitShare = 0)
    {
        var index = engine.Index;
        options.Validate();
        var ctx = new QueryContext(index, query);
        QueryPlan? plan = null;
        int[] pass;
        float[] distances;
        SearchOptions nodeOptions;
        QueryStats stats;
        if (visitShare > 0)
        {
            (var order, distances) = engine.RankPartitions(ctx);
            pass = order[..Math.Max(1, (int)Math.Round(visitShare * order.Length))];
            nodeOptions = options.Filter is { MatchesAll: false } ? options with { FilterStrategy = FilterStrategy.Partitions } : options;
            stats = new QueryStats { Passes = 1, PartitionsPlanned = pass.Length };
        }
        else
        {
            plan = engine.Plan(ctx, options);
            (pass, distances, nodeOptions, stats) = (plan.Partitions, plan.CentroidDistances, plan.NodeOptions(), plan.Stats);
        }
        var top = engine.NewTopK(options);
        long bytes = 0, whole = 0;
        int hits = 0, misses = 0, requests = 0, partitions = 0;
        while (pass.Length > 0)
        {
            var fetch = await index.FetchForQueryAsync(ctx, pass, nodeOptions, ct).ConfigureAwait(false);
            engine.ScanPartitions(ctx, pass, distances, nodeOptions, top, stats, fetch.PartitionOf);
            bytes += fetch.BytesRead;
            hits += fetch.CacheHits;
            misses += fetch.CacheMisses;
            requests += fetch.Requests;
            partitions += pass.Length;
            whole += pass.Sum(p => index.Manifest.Partitions[p].Codes.Bytes + index.Manifest.Partitions[p].Vectors.Bytes);
            pass = plan is null ? [] : engine.NextPass(plan, top.Count);
        }
        if (plan is not null) engine.Certify(plan, top);
        return new FetchedAnswer(engine.Finish(top.ToSortedArray(), ctx, stats), bytes, hits, misses, requests, partitions, whole);
    }
}
