using Squash.Core.Collections;
using Squash.Functions.Api;
using Squash.Search;
using Squash.Search.Filters;
using Squash.Search.Writes;

namespace Squash.Functions.Tree;

/// <summary>
/// Runs one tree node: starts its children's invocations, scans its own partitions meanwhile, then
/// merges the partial top-k lists. A child that still fails after its retries makes its whole subtree's
/// partitions "missing" — the answer then says it is incomplete rather than being silently shorter.
/// </summary>
public sealed class NodeExecutor(ScanInvoker invoker, ILogger<NodeExecutor> log, InstanceActivity activity)
{
    private static int _served;

    /// <param name="filter"><paramref name="request"/>'s filter compiled against <paramref name="loaded"/> (null when it has none):
    /// the caller has compiled it already, the scan endpoint to check the request, the coordinator to plan.</param>
    /// <param name="excluded">The set <paramref name="request"/>'s excludedRows names, when the caller holds it (the coordinator's
    /// prepared tail: a set past the shared cache's bound would otherwise be decoded again on every query).</param>
    public async Task<ScanResponse> ExecuteAsync(string index, OpenedIndex loaded, ScanRequest request, CompiledFilter? filter, string? ownAddress, CancellationToken ct,
        IReadOnlySet<long>? excluded = null)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var span = Telemetry.Source.StartActivity("squash.scan-node");
        span?.SetTag("squash.node", request.Node.Id);
        span?.SetTag("squash.partitions", string.Join(',', request.Node.Partitions));
        bool cold = Interlocked.Increment(ref _served) == 1;
        // The invocation's counter (set by the app for every request; a direct caller gets its own).
        var storage = Squash.Storage.StorageOperationCounter.Current ??= new Squash.Storage.StorageOperationCounter();
        var storageAtStart = storage.Read();
        var options = RequestMapping.ToSearchOptions(request.K, request.Options) with
        {
            // Checked by the scan endpoint (and held by the coordinator): a warm node finds the set decoded already.
            Excluded = request.ExcludedRows is { Length: > 0 } text
                ? excluded ?? RowSetCache.Shared.Get(text, out var problem) ?? throw new ArgumentException($"excludedRows {problem}", nameof(request))
                : null,
        };
        if ((request.Filter is null) != (filter is null)) throw new ArgumentException("a scan's compiled filter comes with its filter, and only then", nameof(filter));
        // The strategy per query comes from the coordinator's plan.
        var childCalls = StartChildren(index, request, ownAddress, ct);

        var node = new NodeAnswer(request.Vectors.Length, cold);
        await ScanOwnPartitionsAsync(loaded, request, options, filter, node, ct).ConfigureAwait(false);
        double workMs = clock.Elapsed.TotalMilliseconds;
        await MergeChildrenAsync(request, childCalls, node, ct).ConfigureAwait(false);
        var own = storage.Read() - storageAtStart;
        storage.MarkReported(own);
        node.Storage += own;
        node.BilledMs += activity.Attribute();
        return node.ToResponse(clock.Elapsed.TotalMilliseconds, workMs);
    }

    /// <summary>
    /// What this node has found so far, per query (top-k, stats, the results' descriptions by id), and the subtree's
    /// figures: its own fetch and scan first, then each child's answer merged in.
    /// </summary>
    private sealed class NodeAnswer(int queries, bool cold)
    {
        public TopK[] Tops { get; } = new TopK[queries];
        public QueryStats[] Stats { get; } = new QueryStats[queries];
        public Dictionary<long, ScanHit>[] Found { get; } = new Dictionary<long, ScanHit>[queries];
        public List<int> Missing { get; } = [];
        public int CacheHits, CacheMisses, DroppedAttempts, Invocations = 1, ColdInstances = cold ? 1 : 0, WarmInstances = cold ? 0 : 1;
        public long BytesRead;
        public double FetchMs, ChildBusyMs, BilledMs, DroppedBilledMs;
        public Squash.Storage.StorageOperations Storage;
        public LevelTiming[] Levels = [];

        public ScanResponse ToResponse(double wallMs, double workMs) => new()
        {
            Neighbours = Tops.Select((t, q) => t.ToSortedArray().Select(n => Found[q][n.Id]).ToArray()).ToArray(),
            Stats = Stats,
            SkippedBounds = Stats.Select(s => s.SkippedBound).ToArray(),
            MissingPartitions = Missing.Distinct().Order().ToArray(),
            Invocations = Invocations,
            BytesRead = BytesRead,
            CacheHits = CacheHits,
            CacheMisses = CacheMisses,
            ColdInstances = ColdInstances,
            WarmInstances = WarmInstances,
            BusyMilliseconds = ChildBusyMs + wallMs,
            BilledMilliseconds = BilledMs,
            DroppedAttempts = DroppedAttempts,
            DroppedBilledMilliseconds = DroppedBilledMs,
            StorageOperations = Storage,
            Levels = LevelTiming.Merge(Levels, [new LevelTiming(0, 1, Math.Round(wallMs, 3), Math.Round(workMs, 3), Math.Round(FetchMs, 3))]),
        };
    }

    /// <summary>Fan-out: every child's invocation starts before this node's own work, so they overlap.</summary>
    private List<(ScanNode Child, Task<ScanResponse> Call)> StartChildren(string index, ScanRequest request, string? ownAddress, CancellationToken ct) =>
        request.Node.Children
            .Select(child => (child, invoker.ScanAsync(index, request with { Node = child }, ownAddress, ct)))
            .ToList();

    /// <summary>
    /// Fetches and scans this node's own partitions for every query, and describes what it found. A read that breaks
    /// the scan after the partitions were fetched (attributes for the results) reports all of them missing; what the
    /// children find still counts. A bug is not caught here.
    /// </summary>
    private async Task ScanOwnPartitionsAsync(OpenedIndex loaded, ScanRequest request, SearchOptions options, CompiledFilter? filter,
        NodeAnswer node, CancellationToken ct)
    {
        int queries = request.Vectors.Length;
        var engine = new SearchEngine(loaded);
        var own = request.Node.Partitions.ToHashSet();
        try
        {
            var contexts = request.Vectors.Select(v => new QueryContext(loaded, v)).ToArray();
            bool filtered = filter is { MatchesAll: false };
            var queryOptions = Enumerable.Range(0, queries).Select(q =>
            {
                var o = filtered ? options with { Filter = filter, FilterStrategy = Enum.Parse<FilterStrategy>(request.Strategies![q]) } : options;
                // The coordinator's plan for this query, where the batch's queries run different plans.
                if (request.RerankFactors is { } r) o = o with { RerankFactor = r[q] };
                if (request.ExactPlans is { } e) o = o with { Exact = e[q] };
                return o;
            }).ToArray();
            var fetches = await FetchOwnPartitionsAsync(loaded, request, contexts, queryOptions, own, node, ct).ConfigureAwait(false);
            for (int q = 0; q < queries; q++)
            {
                node.Tops[q] = engine.NewTopK(options);
                node.Stats[q] = new QueryStats();
                var fetched = fetches[q];
                var mine = request.Plans[q].Where(p => own.Contains(p) && fetched.Data.ContainsKey(p)).ToArray();
                if (mine.Length > 0)
                {
                    var (_, distances) = engine.RankPartitions(contexts[q]);
                    engine.ScanPartitions(contexts[q], mine, distances, queryOptions[q], node.Tops[q], node.Stats[q], p => fetched.Data[p]);
                }
                // What this node found, with the user's id and the requested attributes read here, where the rows are.
                node.Found[q] = await DescribeAsync(loaded, request, node.Tops[q].ToSortedArray(), mine, p => fetched.Data[p], ct).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (!ct.IsCancellationRequested && StoreFailures.IsReadFailure(e))
        {
            log.LogError(e, "tree node {Node} could not scan its partitions; they are reported missing", request.Node.Id);
            node.Missing.Clear();
            node.Missing.AddRange(request.Plans.SelectMany(p => p).Where(own.Contains).Distinct());
            for (int q = 0; q < queries; q++)
            {
                node.Tops[q] = engine.NewTopK(options);
                node.Stats[q] = new QueryStats();
                node.Found[q] = [];
            }
        }
    }

    /// <summary>
    /// Fetches what each query needs from this node's partitions: codes (and attributes for a filter), then only the
    /// raw-vector rows its re-rank can touch (ranged reads), all through the instance's segment cache. A segment that
    /// cannot be read (store down after retries, checksum mismatch) makes its partition missing; the rest still counts.
    /// </summary>
    private async Task<Fetched[]> FetchOwnPartitionsAsync(OpenedIndex loaded, ScanRequest request, QueryContext[] contexts, SearchOptions[] queryOptions,
        HashSet<int> own, NodeAnswer node, CancellationToken ct)
    {
        var fetchClock = System.Diagnostics.Stopwatch.StartNew();
        var unreadable = new System.Collections.Concurrent.ConcurrentDictionary<int, Exception>();
        var fetches = await Task.WhenAll(contexts.Select((context, q) =>
            FetchAsync(loaded, context, request.Plans[q].Where(own.Contains).ToArray(), queryOptions[q], unreadable, ct))).ConfigureAwait(false);
        node.FetchMs = fetchClock.Elapsed.TotalMilliseconds;
        foreach (var (p, error) in unreadable)
        {
            log.LogError(error, "partition {Partition} could not be read; it is reported missing", p);
            node.Missing.Add(p);
        }
        node.CacheHits = fetches.Sum(f => f.Hits);
        node.CacheMisses = fetches.Sum(f => f.Misses);
        node.BytesRead = fetches.Sum(f => f.BytesRead);
        return fetches;
    }

    /// <summary>
    /// Merges each child's answer as it arrives. A child that still fails after its retries (<see cref="IsChildUnavailable"/>)
    /// makes its whole subtree's planned partitions missing; any other failure fails the request.
    /// </summary>
    private async Task MergeChildrenAsync(ScanRequest request, List<(ScanNode Child, Task<ScanResponse> Call)> childCalls, NodeAnswer node, CancellationToken ct)
    {
        foreach (var (child, call) in childCalls)
        {
            try
            {
                var r = await call.ConfigureAwait(false);
                node.Invocations += r.Invocations;
                node.BytesRead += r.BytesRead;
                node.CacheHits += r.CacheHits;
                node.CacheMisses += r.CacheMisses;
                node.ColdInstances += r.ColdInstances;
                node.WarmInstances += r.WarmInstances;
                node.ChildBusyMs += r.BusyMilliseconds;
                node.BilledMs += r.BilledMilliseconds;
                node.DroppedAttempts += r.DroppedAttempts;
                node.DroppedBilledMs += r.DroppedBilledMilliseconds;
                node.Storage += r.StorageOperations;
                node.Missing.AddRange(r.MissingPartitions);
                node.Levels = LevelTiming.Merge(node.Levels, r.Levels.Select(l => l with { Level = l.Level + 1 }));
                for (int q = 0; q < node.Tops.Length; q++)
                {
                    foreach (var n in r.Neighbours[q])
                    {
                        node.Tops[q].TryAdd(n.Id, n.D);
                        node.Found[q][n.Id] = n;
                    }
                    node.Stats[q].Add(r.Stats[q]);
                    node.Stats[q].NoteSkipped(SkippedBound(r, q));
                }
            }
            catch (Exception e) when (!ct.IsCancellationRequested && IsChildUnavailable(e))
            {
                log.LogWarning(e, "tree node {Node} failed after retries; its partitions are reported missing", child.Id);
                var lost = child.AllPartitions().ToHashSet();
                node.Missing.AddRange(request.Plans.SelectMany(p => p).Where(lost.Contains).Distinct());
            }
        }
    }

    /// <summary>What a child's scans passed over for query q (+∞: nothing; 0 when the child did not say, so that nothing is certified).</summary>
    internal static float SkippedBound(ScanResponse response, int q) =>
        response.SkippedBounds is { } bounds ? bounds[q] ?? float.PositiveInfinity : 0;

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
    private static async Task<Fetched> FetchAsync(OpenedIndex loaded, QueryContext ctx, int[] partitions, SearchOptions options,
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
    private static async Task<Dictionary<long, ScanHit>> DescribeAsync(OpenedIndex loaded, ScanRequest request, Neighbor[] own, int[] partitions,
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
