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
        var needed = request.Plans.SelectMany(p => p).Where(own.Contains).Distinct().ToArray();
        // Fetch this node's partitions (warm: from the instance's segment cache) before scanning.
        var fetched = await Task.WhenAll(needed.Select(p => loaded.GetPartitionAsync(p, ct))).ConfigureAwait(false);
        var partitions = new Dictionary<int, (Squash.Index.Model.PartitionCodes, Squash.Index.Model.PartitionVectors)>();
        int hits = 0, misses = 0;
        long bytesRead = 0;
        for (int i = 0; i < needed.Length; i++)
        {
            partitions[needed[i]] = (fetched[i].Codes, fetched[i].Vectors);
            if (fetched[i].Miss) misses++; else hits++;
            bytesRead += fetched[i].BytesRead;
        }
        int coldInstances = cold ? 1 : 0, warmInstances = cold ? 0 : 1;
        double childBusy = 0;
        for (int q = 0; q < queries; q++)
        {
            tops[q] = engine.NewTopK(options);
            stats[q] = new QueryStats();
            var mine = request.Plans[q].Where(own.Contains).ToArray();
            if (mine.Length == 0) continue;
            var ctx = new QueryContext(loaded, request.Vectors[q]);
            var (_, distances) = engine.RankPartitions(ctx);
            engine.ScanPartitions(ctx, mine, distances, options, tops[q], stats[q], p => partitions[p]);
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
