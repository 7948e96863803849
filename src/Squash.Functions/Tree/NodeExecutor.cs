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
        // The filter is compiled once per invocation; the strategy per query comes from the coordinator's plan.
        var filter = request.Filter is { } json ? loaded.Filters.Compile(json) : null;
        bool filtered = filter is { MatchesAll: false };
        var childCalls = request.Node.Children
            .Select(child => (child, task: invoker.ScanAsync(index, request with { Node = child }, ownAddress, ct)))
            .ToList();

        int queries = request.Vectors.Length;
        var engine = new SearchEngine(loaded);
        var tops = new TopK[queries];
        var stats = new QueryStats[queries];
        var own = request.Node.Partitions.ToHashSet();
        var needed = request.Plans.SelectMany(p => p).Where(own.Contains).Distinct().ToArray();
        var missing = new List<int>();
        int hits = 0, misses = 0;
        long bytesRead = 0;
        double fetchMs = 0;
        var found = new Dictionary<long, ScanHit>[queries];
        try
        {
            var contexts = request.Vectors.Select(v => new QueryContext(loaded, v)).ToArray();
            var queryOptions = Enumerable.Range(0, queries).Select(q => filtered
                ? options with { Filter = filter, FilterStrategy = Enum.Parse<FilterStrategy>(request.Strategies![q]) }
                : options).ToArray();
            // Fetch what each query needs from this node's partitions: codes (and attributes for a filter), then only
            // the raw-vector rows its re-rank can touch (ranged reads), all through the instance's segment cache.
            var fetchClock = System.Diagnostics.Stopwatch.StartNew();
            var unreadable = new System.Collections.Concurrent.ConcurrentDictionary<int, Exception>();
            var fetches = await Task.WhenAll(Enumerable.Range(0, queries).Select(q =>
                FetchAsync(loaded, contexts[q], request.Plans[q].Where(own.Contains).ToArray(), queryOptions[q], unreadable, ct))).ConfigureAwait(false);
            fetchMs = fetchClock.Elapsed.TotalMilliseconds;
            foreach (var (p, error) in unreadable)
            {
                // A segment that cannot be read (store down after retries, checksum mismatch): the partition is
                // reported missing and the rest of the answer still counts.
                log.LogError(error, "partition {Partition} could not be read; it is reported missing", p);
                missing.Add(p);
            }
            hits = fetches.Sum(f => f.Hits);
            misses = fetches.Sum(f => f.Misses);
            bytesRead = fetches.Sum(f => f.BytesRead);
            for (int q = 0; q < queries; q++)
            {
                tops[q] = engine.NewTopK(options);
                stats[q] = new QueryStats();
                var fetched = fetches[q];
                var mine = request.Plans[q].Where(p => own.Contains(p) && fetched.Data.ContainsKey(p)).ToArray();
                if (mine.Length > 0)
                {
                    var (_, distances) = engine.RankPartitions(contexts[q]);
                    engine.ScanPartitions(contexts[q], mine, distances, queryOptions[q], tops[q], stats[q], p => fetched.Data[p]);
                }
                // What this node found, with the user's id and the requested attributes read here, where the rows are.
                found[q] = await DescribeAsync(loaded, request, tops[q].ToSortedArray(), mine, p => fetched.Data[p], ct).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (!ct.IsCancellationRequested && StoreFailures.IsReadFailure(e))
        {
            // A read that breaks this node's own scan after its partitions were fetched (attributes for the results):
            // its partitions are reported missing, and what its children found still counts. A bug is not caught here.
            log.LogError(e, "tree node {Node} could not scan its partitions; they are reported missing", request.Node.Id);
            missing.Clear();
            missing.AddRange(needed);
            for (int q = 0; q < queries; q++)
            {
                tops[q] = engine.NewTopK(options);
                stats[q] = new QueryStats();
                found[q] = [];
            }
        }
        int coldInstances = cold ? 1 : 0, warmInstances = cold ? 0 : 1;
        double childBusy = 0;
        double workMs = clock.Elapsed.TotalMilliseconds;

        var levels = Array.Empty<LevelTiming>();
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
                levels = LevelTiming.Merge(levels, r.Levels.Select(l => l with { Level = l.Level + 1 }));
                for (int q = 0; q < queries; q++)
                {
                    foreach (var n in r.Neighbours[q])
                    {
                        tops[q].TryAdd(n.Id, n.D);
                        found[q][n.Id] = n;
                    }
                    stats[q].Add(r.Stats[q]);
                }
            }
            catch (Exception e) when (!ct.IsCancellationRequested && IsChildUnavailable(e))
            {
                log.LogWarning(e, "tree node {Node} failed after retries; its partitions are reported missing", child.Id);
                var lost = child.AllPartitions().ToHashSet();
                missing.AddRange(request.Plans.SelectMany(p => p).Where(lost.Contains).Distinct());
            }
        }
        return new ScanResponse
        {
            Neighbours = tops.Select((t, q) => t.ToSortedArray().Select(n => found[q][n.Id]).ToArray()).ToArray(),
            Stats = stats,
            MissingPartitions = missing.Distinct().Order().ToArray(),
            Invocations = invocations,
            BytesRead = bytesRead,
            CacheHits = hits,
            CacheMisses = misses,
            ColdInstances = coldInstances,
            WarmInstances = warmInstances,
            BusyMilliseconds = childBusy + clock.Elapsed.TotalMilliseconds,
            Levels = LevelTiming.Merge(levels, [new LevelTiming(0, 1, Math.Round(clock.Elapsed.TotalMilliseconds, 3), Math.Round(workMs, 3), Math.Round(fetchMs, 3))]),
        };
    }

    /// <summary>
    /// Failures of the infrastructure between this node and a child, after the resilience pipeline's retries: the
    /// connection (refused, dropped, an HTTP 5xx, 404, 408 or 429 answer), a timeout (the caller's own cancellation is
    /// excluded by the caller), an open circuit. Anything else — a child rejecting the request as invalid, a body that
    /// does not parse, an InvalidOperationException — is a bug and must fail the request loudly, not shorten the answer.
    /// </summary>
    private static bool IsChildUnavailable(Exception e) => e switch
    {
        HttpRequestException { StatusCode: null } => true,
        HttpRequestException { StatusCode: { } status } => (int)status >= 500 || status is System.Net.HttpStatusCode.NotFound
            or System.Net.HttpStatusCode.RequestTimeout or System.Net.HttpStatusCode.TooManyRequests,
        OperationCanceledException or TimeoutException or IOException => true,
        Polly.CircuitBreaker.BrokenCircuitException or Polly.Timeout.TimeoutRejectedException => true,
        _ => false,
    };

    /// <summary>One query's partitions fetched, per partition: the data, and what it cost.</summary>
    private sealed record Fetched(Dictionary<int, PartitionData> Data, int Hits, int Misses, long BytesRead);

    /// <summary>
    /// Fetches one query's partitions together; if that fails, partition by partition, so that one unreadable
    /// partition (recorded in <paramref name="unreadable"/>) does not cost the others.
    /// </summary>
    private static async Task<Fetched> FetchAsync(LoadedIndex loaded, QueryContext ctx, int[] partitions, SearchOptions options,
        System.Collections.Concurrent.ConcurrentDictionary<int, Exception> unreadable, CancellationToken ct)
    {
        try
        {
            var all = await loaded.FetchForQueryAsync(ctx, partitions, options, ct).ConfigureAwait(false);
            return new Fetched(partitions.ToDictionary(p => p, p => all[p]), all.CacheHits, all.CacheMisses, all.BytesRead);
        }
        catch (Exception) when (!ct.IsCancellationRequested && partitions.Length > 0)
        {
            var one = await Task.WhenAll(partitions.Select(async p =>
            {
                try { return (p, Fetch: await loaded.FetchForQueryAsync(ctx, [p], options, ct).ConfigureAwait(false)); }
                catch (Exception e) when (!ct.IsCancellationRequested && StoreFailures.IsReadFailure(e))
                {
                    unreadable[p] = e;
                    return (p, Fetch: (PartitionFetch?)null);
                }
            })).ConfigureAwait(false);
            var ok = one.Where(x => x.Fetch is not null).ToArray();
            return new Fetched(ok.ToDictionary(x => x.p, x => x.Fetch![x.p]), ok.Sum(x => x.Fetch!.CacheHits), ok.Sum(x => x.Fetch!.CacheMisses), ok.Sum(x => x.Fetch!.BytesRead));
        }
    }

    /// <summary>This node's own results by id, each with the user's id and the requested attributes when asked for.</summary>
    private static async Task<Dictionary<long, ScanHit>> DescribeAsync(LoadedIndex loaded, ScanRequest request, Neighbor[] own, int[] partitions,
        Func<int, PartitionData> dataOf, CancellationToken ct)
    {
        var result = new Dictionary<long, ScanHit>(own.Length);
        var include = request.Include ?? [];
        bool describe = (request.Keys || include.Length > 0) && loaded.Manifest.Attributes is not null;
        var rows = describe ? RowsOf(own, partitions, dataOf) : null;
        foreach (var n in own)
        {
            var hit = new ScanHit(n.Id, n.Distance);
            if (rows is not null && rows.TryGetValue(n.Id, out var at))
            {
                var attributes = dataOf(at.Partition).Attributes ?? (await loaded.GetAttributesAsync(at.Partition, ct).ConfigureAwait(false))!;
                hit = hit with
                {
                    Key = request.Keys ? attributes.Keys?[at.Row] : null,
                    Attributes = include.Length > 0 ? AttributeValues.Read(loaded.Manifest.Attributes!, attributes, at.Row, include) : null,
                };
            }
            result[n.Id] = hit;
        }
        return result;
    }

    /// <summary>Where each result sits (partition, row) among this node's partitions.</summary>
    private static Dictionary<long, (int Partition, int Row)> RowsOf(Neighbor[] own, int[] partitions, Func<int, PartitionData> dataOf)
    {
        var wanted = own.Select(n => n.Id).ToHashSet();
        var rows = new Dictionary<long, (int, int)>(own.Length);
        foreach (int p in partitions)
        {
            var ids = dataOf(p).Codes.Ids;
            for (int i = 0; i < ids.Length && rows.Count < wanted.Count; i++)
                if (wanted.Contains(ids[i])) rows[ids[i]] = (p, i);
        }
        return rows;
    }
}
