using Squash.Core.Collections;
using Squash.Functions.Api;
using Squash.Search;

namespace Squash.Functions.Tree;

/// <summary>
/// Runs one tree node: starts its children's invocations, scans its own partitions meanwhile, then
/// merges the partial top-k lists. A child that still fails after its retries makes its whole subtree's
/// partitions "missing" — the answer then says it is incomplete rather than being silently shorter.
/// </summary>
public sealed class NodeExecutor(ScanInvoker invoker, ILogger<NodeExecutor> log)
{
    private static int _served;

    public async Task<ScanResponse> ExecuteAsync(string index, LoadedIndex loaded, ScanRequest request, string? ownAddress, CancellationToken ct)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var span = Telemetry.Source.StartActivity("squash.scan-node");
        span?.SetTag("squash.node", request.Node.Id);
        span?.SetTag("squash.partitions", string.Join(',', request.Node.Partitions));
        bool cold = Interlocked.Increment(ref _served) == 1;
        var options = RequestMapping.ToSearchOptions(request.K, request.Options);
        var childCalls = request.Node.Children
            .Select(child => (child, task: invoker.ScanAsync(index, request with { Node = child }, ownAddress, ct)))
            .ToList();

        int queries = request.Vectors.Length;
        var engine = new SearchEngine(loaded);
        var tops = new TopK[queries];
        var stats = new QueryStats[queries];
        var own = request.Node.Partitions.ToHashSet();
        // Fetch what each query needs from this node's partitions: codes, then only the raw-vector rows its
        // re-rank can touch (ranged reads), all through the instance's segment cache (warm: no reads).
        var contexts = request.Vectors.Select(v => new QueryContext(loaded, v)).ToArray();
        var fetches = await Task.WhenAll(Enumerable.Range(0, queries).Select(q =>
            loaded.FetchForQueryAsync(contexts[q], request.Plans[q].Where(own.Contains).ToArray(), options, ct))).ConfigureAwait(false);
        int hits = fetches.Sum(f => f.CacheHits), misses = fetches.Sum(f => f.CacheMisses);
        long bytesRead = fetches.Sum(f => f.BytesRead);
        int coldInstances = cold ? 1 : 0, warmInstances = cold ? 0 : 1;
        double childBusy = 0;
        for (int q = 0; q < queries; q++)
        {
            tops[q] = engine.NewTopK(options);
            stats[q] = new QueryStats();
            var mine = request.Plans[q].Where(own.Contains).ToArray();
            if (mine.Length == 0) continue;
            var ctx = contexts[q];
            var (_, distances) = engine.RankPartitions(ctx);
            var fetched = fetches[q];
            engine.ScanPartitions(ctx, mine, distances, options, tops[q], stats[q], p => (fetched[p].Codes, fetched[p].Vectors));
        }

        var missing = new List<int>();
        int invocations = 1;
        foreach (var (child, task) in childCalls)
        {
            try
            {
                var r = await task.ConfigureAwait(false);
                invocations += r.Invocations;
                bytesRead += r.BytesRead;
                hits += r.CacheHits;
                misses += r.CacheMisses;
                coldInstances += r.ColdInstances;
                warmInstances += r.WarmInstances;
                childBusy += r.BusyMilliseconds;
                missing.AddRange(r.MissingPartitions);
                for (int q = 0; q < queries; q++)
                {
                    foreach (var n in r.Neighbours[q]) tops[q].TryAdd(n.Id, n.D);
                    stats[q].Add(r.Stats[q]);
                }
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException or TimeoutException or InvalidOperationException
                                           or Polly.CircuitBreaker.BrokenCircuitException or Polly.Timeout.TimeoutRejectedException)
            {
                if (ct.IsCancellationRequested) throw;
                log.LogWarning(e, "tree node {Node} failed after retries; its partitions are reported missing", child.Id);
                var lost = child.AllPartitions().ToHashSet();
                missing.AddRange(request.Plans.SelectMany(p => p).Where(lost.Contains).Distinct());
            }
        }
        return new ScanResponse
        {
            Neighbours = tops.Select(t => t.ToSortedArray().Select(n => new Neighbour(n.Id, n.Distance)).ToArray()).ToArray(),
            Stats = stats,
            MissingPartitions = missing.Distinct().Order().ToArray(),
            Invocations = invocations,
            BytesRead = bytesRead,
            CacheHits = hits,
            CacheMisses = misses,
            ColdInstances = coldInstances,
            WarmInstances = warmInstances,
            BusyMilliseconds = childBusy + clock.Elapsed.TotalMilliseconds,
        };
    }
}
