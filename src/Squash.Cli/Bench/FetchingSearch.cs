using Squash.Search;

namespace Squash.Cli.Bench;

/// <summary>One answered query and what answering it read from the store.</summary>
/// <remarks><see cref="WholeSegmentBytes"/>: what reading the visited partitions' codes and raw vectors whole would have cost.</remarks>
public sealed record FetchedAnswer(SearchResult Result, long BytesRead, int CacheHits, int CacheMisses, int Requests, int Partitions, long WholeSegmentBytes = 0);

/// <summary>
/// The in-process cold path: plan the partitions, fetch only what the query needs (codes, then the re-ranked
/// rows by ranged reads, through the index's cache), then scan. Filtered queries are planned inside the
/// engine, which reads whole segments on demand; their bytes come from the store's counter, so they are exact
/// only when queries run one at a time.
/// </summary>
public static class FetchingSearch
{
    /// <param name="visitShare">When above 0, visit exactly this share of the partitions (nearest centroids first) instead of the CF plan:
    /// a fixed amount of work per query, for storage figures such as "bytes read by a query that visits 10 % of the partitions".</param>
    public static async Task<FetchedAnswer> SearchAsync(SearchEngine engine, float[] query, SearchOptions options, CancellationToken ct, double visitShare = 0)
    {
        var index = engine.Index;
        if (options.Filter is { MatchesAll: false })
        {
            long before = index.Store.BytesRead;
            var filtered = engine.Search(query, options);
            long read = index.Store.BytesRead - before;
            return new FetchedAnswer(filtered, read, 0, 0, 0, filtered.Stats.PartitionsScanned);
        }
        options.Validate();
        var ctx = new QueryContext(index, query);
        var plan = engine.Plan(ctx, options);
        if (visitShare > 0)
        {
            var (order, distances) = engine.RankPartitions(ctx);
            plan = new QueryPlan(order[..Math.Max(1, (int)Math.Round(visitShare * order.Length))], distances);
        }
        var fetch = await index.FetchForQueryAsync(ctx, plan.Partitions, options, ct).ConfigureAwait(false);
        var top = engine.NewTopK(options);
        var stats = new QueryStats { Passes = 1, PartitionsPlanned = plan.Partitions.Length };
        engine.ScanPartitions(ctx, plan.Partitions, plan.CentroidDistances, options, top, stats, p => (fetch[p].Codes, fetch[p].Vectors));
        return new FetchedAnswer(engine.Finish(top.ToSortedArray(), ctx, stats), fetch.BytesRead, fetch.CacheHits, fetch.CacheMisses, fetch.Requests, plan.Partitions.Length,
            plan.Partitions.Sum(p => index.Manifest.Partitions[p].Codes.Bytes + index.Manifest.Partitions[p].Vectors.Bytes));
    }
}
