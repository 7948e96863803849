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
        var found = new Dictionary<long, Neighbour>[queries];
        try
        {
            // Fetch this node's partitions (warm: from the instance's segment cache) before scanning.
            var fetchClock = System.Diagnostics.Stopwatch.StartNew();
            var fetched = await Task.WhenAll(needed.Select(async p =>
            {
                try { return (Partition: p, Data: await loaded.GetPartitionAsync(p, ct).ConfigureAwait(false), Error: (Exception?)null); }
                catch (Exception e) when (!ct.IsCancellationRequested && e is not OutOfMemoryException) { return (p, default, e); }
            })).ConfigureAwait(false);
            fetchMs = fetchClock.Elapsed.TotalMilliseconds;
            var partitions = new Dictionary<int, (Squash.Index.Model.PartitionCodes, Squash.Index.Model.PartitionVectors)>();
            foreach (var (p, data, error) in fetched)
            {
                if (error is not null)
                {
                    // A segment that cannot be read (store down after retries, checksum mismatch): the partition is
                    // reported missing and the rest of the answer still counts.
                    log.LogError(error, "partition {Partition} could not be read; it is reported missing", p);
                    missing.Add(p);
                    continue;
                }
                partitions[p] = (data.Codes, data.Vectors);
                if (data.Miss) misses++; else hits++;
                bytesRead += data.BytesRead;
            }
            var readable = partitions.Keys.ToArray();
            for (int q = 0; q < queries; q++)
            {
                tops[q] = engine.NewTopK(options);
                stats[q] = new QueryStats();
                var mine = request.Plans[q].Where(partitions.ContainsKey).ToArray();
                if (mine.Length == 0) continue;
                var ctx = new QueryContext(loaded, request.Vectors[q]);
                var (_, distances) = engine.RankPartitions(ctx);
                var queryOptions = filtered
                    ? options with { Filter = filter, FilterStrategy = Enum.Parse<FilterStrategy>(request.Strategies![q]) }
                    : options;
                engine.ScanPartitions(ctx, mine, distances, queryOptions, tops[q], stats[q],
                    p => new PartitionData(partitions[p].Item1, partitions[p].Item2, filtered ? loaded.Attributes(p) : null));
            }
            // What this node found, with the user's id and the requested attributes read here, where the rows are.
            for (int q = 0; q < queries; q++) found[q] = Describe(loaded, request, tops[q].ToSortedArray(), readable, p => partitions[p].Item1);
        }
        catch (Exception e) when (!ct.IsCancellationRequested && e is not OutOfMemoryException)
        {
            // Anything else that breaks this node's own scan: its partitions are reported missing, and what its
            // children found still counts.
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

    /// <summary>This node's own results by id, each with the user's id and the requested attributes when asked for.</summary>
    private static Dictionary<long, Neighbour> Describe(LoadedIndex loaded, ScanRequest request, Neighbor[] own, int[] partitions,
        Func<int, Squash.Index.Model.PartitionCodes> codesOf)
    {
        var result = new Dictionary<long, Neighbour>(own.Length);
        var include = request.Include ?? [];
        bool describe = (request.Keys || include.Length > 0) && loaded.Manifest.Attributes is not null;
        var rows = describe ? RowsOf(own, partitions, codesOf) : null;
        foreach (var n in own)
        {
            var neighbour = new Neighbour(n.Id, n.Distance);
            if (rows is not null && rows.TryGetValue(n.Id, out var at))
            {
                var attributes = loaded.Attributes(at.Partition)!;
                neighbour = neighbour with
                {
                    Key = request.Keys ? attributes.Keys?[at.Row] : null,
                    Attributes = include.Length > 0 ? AttributeValues.Read(loaded.Manifest.Attributes!, attributes, at.Row, include) : null,
                };
            }
            result[n.Id] = neighbour;
        }
        return result;
    }

    /// <summary>Where each result sits (partition, row) among this node's partitions.</summary>
    private static Dictionary<long, (int Partition, int Row)> RowsOf(Neighbor[] own, int[] partitions, Func<int, Squash.Index.Model.PartitionCodes> codesOf)
    {
        var wanted = own.Select(n => n.Id).ToHashSet();
        var rows = new Dictionary<long, (int, int)>(own.Length);
        foreach (int p in partitions)
        {
            var ids = codesOf(p).Ids;
            for (int i = 0; i < ids.Length && rows.Count < wanted.Count; i++)
                if (wanted.Contains(ids[i])) rows[ids[i]] = (p, i);
        }
        return rows;
    }
}
