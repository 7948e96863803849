using System.Text.Json;
using System.Text.Json.Nodes;
using Squash.Core.Collections;
using Squash.Functions.Api;
using Squash.Search;
using Squash.Search.Filters;
using Squash.Search.Writes;

namespace Squash.Functions.Tree;

/// <summary>What the coordinator hands back per query after all passes.</summary>
/// <remarks><see cref="InputSquaredNorm"/> turns internal distances into reported ones (<c>MetricSpace.ToReported</c>).</remarks>
public sealed record CoordinatedQuery(ScanHit[] Results, QueryStats Stats, int[] MissingPartitions, double InputSquaredNorm);

/// <summary>The outcome of a coordinated request: per query results, and what the whole tree did.</summary>
public sealed record CoordinatedAnswer(CoordinatedQuery[] Queries, ScanResponse Totals, int TreeNodes, TreeShapeChoice? Shape = null);

/// <summary>
/// The coordinator function: plans every query (filter-aware partition selection and strategy), lays each
/// pass's partitions over the invocation tree, and merges. A filtered query whose merged answer is still short
/// of k after a pass gets another (<see cref="SearchEngine.NextPass"/>, which needs only the merged count),
/// so the tree runs exactly the passes the in-process engine runs and returns the same answer.
/// </summary>
public sealed class QueryCoordinator(NodeExecutor executor, ShapeCalibration calibration, Microsoft.Extensions.Options.IOptions<FunctionSettings> settings)
{
    /// <summary>Passes are bounded by the engine (they end when every partition that can match was handed out); this is a backstop.</summary>
    private const int MaxPasses = 64;

    /// <param name="tail">A strong read's log tail past the version's watermark (null: eventual). Rows it replaced or deleted are
    /// excluded by every node, its deleteWhere filters are added to the query's filter as a negation (or, when they hold more
    /// than FilterCompiler.MaxTailClauses clauses, the rows they delete are excluded too), and its live upserts
    /// are ranked here by exact distance and merged with what the tree found.</param>
    public async Task<CoordinatedAnswer> RunAsync(string index, OpenedIndex loaded, float[][] vectors, int k, QueryOptions? requestOptions,
        JsonElement? filterJson, CompiledFilter? filter, string[]? include, int branching, int depth, string? ownAddress, CancellationToken ct,
        LogTail? tail = null, Func<int, TreeShapeChoice>? chooseShape = null)
    {
        var userFilter = filterJson;
        PreparedTail? prepared = null;
        IReadOnlySet<long>? excluded = null;
        if (tail is not null)
        {
            prepared = await tail.PrepareAsync(loaded, ct).ConfigureAwait(false);
            excluded = prepared.Excluded;
            // This instance's own node (the coordinator scans at depth 0, and children may land here) takes the prepared set.
            if (excluded.Count > 0) RowSetCache.Shared.Remember(prepared.ExcludedText, excluded);
            // Within their budget the deleteWheres go to the nodes in the filter (the scan endpoint takes at most
            // FilterCompiler.MaxScanClauses); past it the prepared tail has already excluded the rows they delete.
            if (tail.DeleteWheres.Count > 0 && !prepared.DeleteWheresExcluded)
            {
                filterJson = WithoutDeleted(filterJson, tail.DeleteWheres);
                filter = loaded.Filters.Compile(filterJson.Value);
            }
        }
        var options = RequestMapping.ToSearchOptions(k, requestOptions) with { Filter = filter, Excluded = excluded };
        var engine = new SearchEngine(loaded);
        int n = vectors.Length;
        var contexts = vectors.Select(v => new QueryContext(loaded, v)).ToArray();
        var plans = contexts.Select(c => engine.Plan(c, options)).ToArray();
        var tops = plans.Select(_ => engine.NewTopK(options)).ToArray();
        var found = plans.Select(_ => new Dictionary<long, ScanHit>()).ToArray();
        var nodeStats = plans.Select(_ => new QueryStats()).ToArray();
        var missing = plans.Select(_ => new SortedSet<int>()).ToArray();
        bool filtered = filter is { MatchesAll: false };
        var strategies = filtered ? plans.Select(p => p.FilterStrategy.ToString()).ToArray() : null;
        ScanResponse totals = new() { Neighbours = [], Stats = [], MissingPartitions = [], Invocations = 0 };
        int treeNodes = 0, rounds = 0, busiest = 0;
        var pass = plans.Select(p => p.Partitions).ToArray();
        // Cost-budgeted planning picks the shape once, from the first pass's partitions; later passes keep it.
        TreeShapeChoice? shape = null;
        if (chooseShape is not null)
        {
            shape = chooseShape(pass.SelectMany(p => p).Distinct().Count());
            (branching, depth) = (shape.Branching, shape.Depth);
        }
        if (depth >= 1 && tail is not null && prepared is { Excluded.Count: > 0 } && !MaskedRowsShippable(prepared))
        {
            // The nodes cannot take the masked rows, and the coordinator holds them already: it scans alone, unless the request
            // named the tree (then it learns why not, and how to get an answer).
            if (requestOptions?.Branching is not null || requestOptions?.Depth is not null) throw MaskedRowsTooMany(index, tail, prepared);
            depth = 0;
            shape = new TreeShapeChoice(branching, 0, WriteTailShape);
        }
        // The tail's live upserts need nothing from the tree: they are ranked on another thread while it scans.
        var tailRanking = prepared is { Rows.Count: > 0 } ready
            ? Task.Run(() => contexts.Select(c => RankTail(loaded, ready, c, userFilter, include, k)).ToArray(), ct)
            : null;
        // The nodes scan with the plan, not the request: a recall target is turned into CF and R (or exact) here, once per
        // query; queries of one batch may differ (a mixed target, filtered bands), so each query's R and exact mode go along.
        var planOptions = plans.Length > 0 ? plans[0].Options : options;
        var nodeOptions = (requestOptions ?? new QueryOptions()) with
        {
            Recall = null, CentroidFactor = planOptions.CentroidFactor, RerankFactor = planOptions.RerankFactor, Exact = planOptions.Exact,
            MaxPartitions = null, Consistency = null,
        };
        bool perQuery = plans.Any(p => p.Options.RerankFactor != planOptions.RerankFactor || p.Options.Exact != planOptions.Exact);
        var rerankFactors = perQuery ? plans.Select(p => p.Options.RerankFactor).ToArray() : null;
        var exactPlans = perQuery ? plans.Select(p => p.Options.Exact).ToArray() : null;
        for (int round = 0; round < MaxPasses && pass.Any(p => p.Length > 0); round++)
        {
            var all = pass.SelectMany(p => p).Distinct().ToArray();
            // Level 1 of the tree are the coordinator's children; with depth 0 the coordinator scans everything itself.
            var roots = TreePlanner.Build(all, Math.Max(1, branching), depth);
            var root = depth < 1 ? new ScanNode(-1, all, []) : new ScanNode(-1, [], roots);
            treeNodes = Math.Max(treeNodes, root.Count() - 1);
            busiest = MostPartitions(root);
            rounds++;
            var scan = new ScanRequest
            {
                Version = loaded.Manifest.Version, Vectors = vectors, K = k, Options = nodeOptions, Plans = pass, Node = root,
                Filter = filtered ? filterJson : null, Strategies = strategies, RerankFactors = rerankFactors, ExactPlans = exactPlans,
                Include = include is { Length: > 0 } ? include : null, Keys = loaded.Manifest.Attributes is { HasIds: true },
                ExcludedRows = prepared is { Excluded.Count: > 0 } ? prepared.ExcludedText : null,
            };
            var result = await executor.ExecuteAsync(index, loaded, scan, filtered ? filter : null, ownAddress, ct, excluded).ConfigureAwait(false);
            totals = Accumulate(totals, result);
            var next = new int[n][];
            for (int q = 0; q < n; q++)
            {
                var planned = pass[q].ToHashSet();
                foreach (int p in result.MissingPartitions) if (planned.Contains(p)) missing[q].Add(p);
                foreach (var nb in result.Neighbours[q])
                    if (tops[q].TryAdd(nb.Id, nb.D)) found[q][nb.Id] = nb;
                nodeStats[q].Add(result.Stats[q]);
                nodeStats[q].NoteSkipped(NodeExecutor.SkippedBound(result, q));
                next[q] = pass[q].Length == 0 ? [] : engine.NextPass(plans[q], tops[q].Count);
            }
            pass = next;
        }

        // The planner's constants are measured on single-vector, one-pass queries on warm instances: a batch scans n vectors
        // per partition, a second pass adds a round trip, a cold start is not the steady state the model describes.
        if (n == 1 && rounds == 1 && totals.ColdInstances == 0 && totals.MissingPartitions.Length == 0)
            calibration.Observe((branching, depth), busiest, totals.CacheMisses > 0 || totals.BytesRead > 0, totals.Levels);

        var queries = new CoordinatedQuery[n];
        for (int q = 0; q < n; q++)
        {
            var stats = plans[q].Stats;
            stats.Add(nodeStats[q]);
            // The nodes' bounds arrived beside their stats; the partitions never planned or lost are the coordinator's.
            engine.Certify(plans[q], tops[q], missing[q]);
            var best = tops[q].ToSortedArray();
            if (tailRanking is not null) best = MergeTail(loaded, prepared!, (await tailRanking.ConfigureAwait(false))[q], k, best, found[q]);
            queries[q] = new CoordinatedQuery(best.Select(b => found[q][b.Id]).ToArray(), stats, missing[q].ToArray(), contexts[q].InputSquaredNorm);
        }
        return new CoordinatedAnswer(queries, totals, treeNodes, shape);
    }

    /// <summary><see cref="TreeShapeChoice.ChosenBy"/> of a strong query run on the coordinator alone because its tail masks too many rows to ship.</summary>
    public const string WriteTailShape = "write-tail";

    /// <summary>
    /// Whether the tree's nodes can take the rows the tail masks: each receives them (excludedRows) and holds them decoded,
    /// so their number is bounded (<see cref="FunctionSettings.MaxMaskedRows"/>, and the text by the room a /scan body has
    /// for it). Sent anyway, every node refused the body (413) and the query was a bare 500.
    /// </summary>
    private bool MaskedRowsShippable(PreparedTail prepared) =>
        prepared.Excluded.Count <= settings.Value.MaxMaskedRows && prepared.ExcludedText.Length <= RowNumberCodec.MaxTextLength(settings.Value.MaxMaskedRows);

    /// <summary>A request that names the tree shape while its tail masks more rows than the nodes take: a 503 naming the cause and the ways out, without Retry-After.</summary>
    private IndexUnavailableException MaskedRowsTooMany(string index, LogTail tail, PreparedTail prepared)
    {
        int maxRows = settings.Value.MaxMaskedRows;
        long maxText = RowNumberCodec.MaxTextLength(maxRows);
        var size = prepared.Excluded.Count <= maxRows
            ? $"{prepared.ExcludedText.Length:N0} characters of row numbers, past the {maxText:N0} a node takes for up to {maxRows:N0} rows (Squash:MaxMaskedRows)"
            : $"more than the {maxRows:N0} a node takes (Squash:MaxMaskedRows)";
        return new IndexUnavailableException(index,
            $"index '{index}': a strong query over the invocation tree sends every tree node the indexed rows that the write-ahead log "
            + $"past the indexed sequence {tail.Watermark} (through sequence {tail.To}) replaces or deletes, and those are {prepared.Excluded.Count:N0} rows: {size}. "
            + "Let ingest index the log (the ingest function runs after writes; `squash ingest` on a store without queues), "
            + "or send the query with options.depth 0, or without options.branching and options.depth (the coordinator then scans alone and sends nothing), "
            + "or with consistency \"eventual\".",
            // No Retry-After: the same request fails until ingest has indexed the log (minutes for millions of rows, not a
            // second), while each changed request the detail names answers at once.
            transient: true) { Title = "Write tail too large for a strong query", RetryAfter = null };
    }

    /// <summary>
    /// A strong read: every batch acknowledged before this call is seen. The scan starts at once with the tail this instance
    /// already holds for the version, while the log's end is checked past it (the one blob request read-your-writes needs
    /// per query); only when that check finds batches the held tail lacks does the query run again, with them. A cold
    /// instance (no tail held for this version) reads the tail first. Returns the answer and the tail it reflects.
    /// </summary>
    public async Task<(CoordinatedAnswer Answer, LogTail Tail)> RunStrongAsync(TailReader tails, Squash.Storage.Writes.WriteLog log, string index,
        OpenedIndex loaded, float[][] vectors, int k, QueryOptions? requestOptions, JsonElement? filterJson, CompiledFilter? filter, string[]? include,
        int branching, int depth, string? ownAddress, CancellationToken ct, Func<int, TreeShapeChoice>? chooseShape = null)
    {
        ArgumentNullException.ThrowIfNull(tails);
        ArgumentNullException.ThrowIfNull(log);
        long watermark = loaded.Manifest.IndexedSequence;
        if (tails.Known(log.Index, watermark, TailShape.Of(loaded.Manifest)) is not { } held)
        {
            var tail = await ReadTailAsync(tails, log, index, loaded.Manifest, ct).ConfigureAwait(false);
            return (await RunAsync(index, loaded, vectors, k, requestOptions, filterJson, filter, include, branching, depth, ownAddress, ct, tail, chooseShape)
                .ConfigureAwait(false), tail);
        }
        var checking = ReadTailAsync(tails, log, index, loaded.Manifest, ct);
        CoordinatedAnswer first;
        try
        {
            first = await RunAsync(index, loaded, vectors, k, requestOptions, filterJson, filter, include, branching, depth, ownAddress, ct, held, chooseShape)
                .ConfigureAwait(false);
        }
        catch
        {
            _ = checking.ContinueWith(static t => t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
            throw;
        }
        var latest = await checking.ConfigureAwait(false);
        // Same watermark and same last sequence: the same batches, so the answer already reflects every acknowledged write.
        if (latest.To == held.To) return (first, held);
        var again = await RunAsync(index, loaded, vectors, k, requestOptions, filterJson, filter, include, branching, depth, ownAddress, ct, latest, chooseShape)
            .ConfigureAwait(false);
        // Both runs were invocations the request paid for.
        return (again with { Totals = Accumulate(first.Totals, again.Totals), TreeNodes = Math.Max(first.TreeNodes, again.TreeNodes) }, latest);
    }

    /// <summary>
    /// The log tail past <paramref name="watermark"/>, or an <see cref="IndexUnavailableException"/>: a batch blob that is
    /// damaged (flipped byte, cut short, emptied) or missing below the log's end is a damaged index (500, naming the index
    /// and the blob), a store that cannot be read a 503. Left to propagate as they were, they were a bare 500 with no word
    /// of the index or the blob.
    /// </summary>
    private static async Task<LogTail> ReadTailAsync(TailReader tails, Squash.Storage.Writes.WriteLog log, string index, Squash.Index.Model.IndexManifest version, CancellationToken ct)
    {
        long watermark = version.IndexedSequence;
        try
        {
            return await tails.ReadAsync(log, watermark, version.Attributes, TailShape.Of(version), ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is InvalidDataException or JsonException or Squash.Index.Format.CorruptIndexException)
        {
            throw new IndexUnavailableException(index,
                $"index '{index}' is damaged: a strong query cannot read its write-ahead log past the indexed sequence {watermark}: "
                + $"{e.Message.Replace(log.Blobs.Description, "the store", StringComparison.Ordinal)} "
                + "(eventual queries still answer from the indexed version)", transient: false, e);
        }
        catch (Exception e) when (!ct.IsCancellationRequested && StoreFailures.IsUnreachable(e))
        {
            throw new IndexUnavailableException(index, $"the write-ahead log of index '{index}' could not be read from the store; try again later", transient: true, e);
        }
    }

    /// <summary>The most partitions any one node of the tree scans itself.</summary>
    private static int MostPartitions(ScanNode node) => node.Children.Aggregate(node.Partitions.Length, (most, c) => Math.Max(most, MostPartitions(c)));

    /// <summary>
    /// The tail's k nearest live upserts that pass the query's filter (exact distances: the tail is small and unindexed),
    /// with their descriptions. A tail row gets the result id −1 − i (row numbers are never negative) and reports row −1.
    /// </summary>
    private static (Neighbor[] Best, Dictionary<long, ScanHit> Hits) RankTail(OpenedIndex loaded, PreparedTail tail, QueryContext context,
        JsonElement? filter, string[]? include, int k)
    {
        var top = new TopK(TailMergeCapacity(loaded, tail, k));
        var schema = loaded.Manifest.Attributes;
        var scratch = new float[tail.ScratchLength];
        for (int i = 0; i < tail.Rows.Count; i++)
        {
            if (filter is { } f && !TailFilter.Matches(f, tail.Rows[i].Attributes, schema)) continue;
            top.TryAdd(-1 - i, tail.Distance(context, i, scratch));
        }
        var best = top.ToSortedArray();
        var hits = new Dictionary<long, ScanHit>(best.Length);
        foreach (var n in best)
        {
            var row = tail.Rows[(int)(-1 - n.Id)];
            hits[n.Id] = new ScanHit(n.Id, n.Distance) { Key = row.Id, Attributes = include is { Length: > 0 } ? TailAttributes(row, include) : null };
        }
        return (best, hits);
    }

    private static int TailMergeCapacity(OpenedIndex loaded, PreparedTail tail, int k) =>
        Math.Max(1, (int)Math.Min(k, loaded.Manifest.Count + tail.Rows.Count));

    /// <summary>The tree's answer merged with the tail's best (<see cref="RankTail"/>): the k nearest of both.</summary>
    private static Neighbor[] MergeTail(OpenedIndex loaded, PreparedTail tail, (Neighbor[] Best, Dictionary<long, ScanHit> Hits) ranked, int k,
        Neighbor[] tree, Dictionary<long, ScanHit> found)
    {
        var top = new TopK(TailMergeCapacity(loaded, tail, k));
        foreach (var n in tree) top.TryAdd(n.Id, n.Distance);
        foreach (var n in ranked.Best)
            if (top.TryAdd(n.Id, n.Distance)) found[n.Id] = ranked.Hits[n.Id];
        return top.ToSortedArray();
    }

    private static JsonObject TailAttributes(TailRow row, string[] include)
    {
        var o = new JsonObject();
        if (row.Attributes is { ValueKind: JsonValueKind.Object } a)
            foreach (var name in include)
                if (a.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null) o[name] = JsonNode.Parse(v.GetRawText());
        return o;
    }

    /// <summary>The query's filter AND NOT (any of the tail's deleteWhere filters): what an indexed row must pass to be live.</summary>
    private static JsonElement WithoutDeleted(JsonElement? filter, IReadOnlyList<JsonElement> deleteWheres)
    {
        var deleted = new JsonObject { ["$or"] = new JsonArray([.. deleteWheres.Select(d => JsonNode.Parse(d.GetRawText()))]) };
        var live = new JsonObject { ["$not"] = deleted };
        var all = filter is { } f ? new JsonObject { ["$and"] = new JsonArray(JsonNode.Parse(f.GetRawText()), live) } : live;
        return JsonSerializer.SerializeToElement(all, ApiJson.Default.JsonObject);
    }

    /// <summary>Adds one pass's tree-wide figures to the running totals (levels: the slowest per level over passes).</summary>
    private static ScanResponse Accumulate(ScanResponse a, ScanResponse b) => new()
    {
        Neighbours = [],
        Stats = [],
        MissingPartitions = [.. a.MissingPartitions.Union(b.MissingPartitions).Order()],
        Invocations = a.Invocations + b.Invocations,
        BytesRead = a.BytesRead + b.BytesRead,
        ColdInstances = a.ColdInstances + b.ColdInstances,
        WarmInstances = a.WarmInstances + b.WarmInstances,
        CacheHits = a.CacheHits + b.CacheHits,
        CacheMisses = a.CacheMisses + b.CacheMisses,
        BusyMilliseconds = a.BusyMilliseconds + b.BusyMilliseconds,
        BilledMilliseconds = a.BilledMilliseconds + b.BilledMilliseconds,
        DroppedAttempts = a.DroppedAttempts + b.DroppedAttempts,
        DroppedBilledMilliseconds = a.DroppedBilledMilliseconds + b.DroppedBilledMilliseconds,
        StorageOperations = a.StorageOperations + b.StorageOperations,
        Levels = LevelTiming.Merge(a.Levels, b.Levels),
    };
}
