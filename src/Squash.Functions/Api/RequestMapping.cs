using Squash.Search;
using Squash.Search.Filters;

namespace Squash.Functions.Api;

/// <summary>Checks a query request field by field; every problem is reported against the field's name.</summary>
public static class RequestMapping
{
    public static Dictionary<string, string[]> Validate(QueryRequest r, int dimensions, FunctionSettings settings, string metric = "l2")
    {
        var errors = new Dictionary<string, string[]>();
        void Add(string field, string message) => errors[field] = [.. errors.GetValueOrDefault(field, []), message];

        if (r.Vector is null && r.Vectors is null) Add("vector", "a query needs 'vector' (one query) or 'vectors' (a batch)");
        if (r.Vector is not null && r.Vectors is not null) Add("vectors", "send either 'vector' or 'vectors', not both");
        if (r.Vector is not null) CheckVector("vector", r.Vector, dimensions, metric, Add);
        if (r.Vectors is not null) CheckVectors("vectors", r.Vectors, dimensions, metric, settings.MaxBatch, errors, Add);
        if (r.K is { } k) CheckK("k", k, Add);
        if (r.Options is { } o)
        {
            CheckOptions(o, Add);
            // The cap is measured for unfiltered plans only: a filtered plan walks until its filter's estimated matches are reached.
            if (o.MaxPartitions is not null && r.Filter is { ValueKind: not System.Text.Json.JsonValueKind.Null })
                Add("options.maxPartitions", SearchOptions.MaxPartitionsUnfilteredOnly);
            // Every node of the tree is a billed invocation: a caller may not choose more of them than the app allows.
            if ((o.Branching is not null || o.Depth is not null) && !errors.ContainsKey("options.branching") && !errors.ContainsKey("options.depth"))
            {
                int b = o.Branching ?? settings.Branching, l = o.Depth ?? settings.Depth;
                long nodes = TreeNodes(b, l);
                if (nodes > settings.MaxTreeNodes)
                {
                    var message = $"a tree with branching {b} and depth {l} has {nodes} nodes; this app allows at most {settings.MaxTreeNodes}";
                    if (o.Branching is not null) Add("options.branching", message);
                    if (o.Depth is not null) Add("options.depth", message);
                }
            }
        }
        return errors;
    }

    /// <summary>Scan nodes in a tree of branching b and depth L: b + b² + … + b^L (64 bits: 16 and 4 give 69,904).</summary>
    public static long TreeNodes(int branching, int depth)
    {
        long total = 0, level = 1;
        for (int l = 1; l <= depth; l++) { level *= branching; total += level; }
        return total;
    }

    /// <summary>
    /// Checks a scan request (the internal tree-node endpoint) as strictly as a query: it comes over HTTP too. The
    /// tree it describes may hold at most the app's <see cref="FunctionSettings.MaxTreeNodes"/> (or its own configured tree's) nodes.
    /// <paramref name="filter"/> is the request's filter compiled in the check, for the node to scan with (null without one,
    /// or when it does not compile).
    /// </summary>
    public static Dictionary<string, string[]> ValidateScan(ScanRequest r, OpenedIndex index, FunctionSettings settings, out CompiledFilter? filter)
    {
        var errors = new Dictionary<string, string[]>();
        void Add(string field, string message) => errors[field] = [.. errors.GetValueOrDefault(field, []), message];
        int partitions = index.PartitionCount;

        if (r.Vectors is null) Add("vectors", "is required");
        else CheckVectors("vectors", r.Vectors, index.Manifest.Dimensions, index.Manifest.Metric, settings.MaxBatch, errors, Add);
        CheckK("k", r.K, Add);
        if (r.Options is null) Add("options", "is required");
        else
        {
            CheckOptions(r.Options, Add);
            // Nodes scan the coordinator's plan; a target is turned into CF and R before any node sees the query.
            if (r.Options.Recall is not null) Add("options.recall", "is not taken by a scan node: send the plan's centroidFactor and rerankFactor");
            if (r.Options.MaxPartitions is not null) Add("options.maxPartitions", "is not taken by a scan node: the coordinator plans which partitions each node scans");
            if (r.Options.Consistency is not null) Add("options.consistency", "is not taken by a scan node: the coordinator reads the log tail and sends the rows it excludes");
        }
        int queries = r.Vectors?.Length ?? 0;
        if (r.Plans is null) Add("plans", "is required");
        else
        {
            if (r.Plans.Length != queries) Add("plans", $"needs one plan per vector ({queries}), got {r.Plans.Length}");
            for (int q = 0; q < r.Plans.Length && errors.Count < JsonBody.MaxErrors; q++)
                CheckPartitions($"plans[{q}]", r.Plans[q], partitions, Add);
        }
        if (r.Filter is not null)
        {
            if (r.Strategies is null) Add("strategies", "is required with a filter (one per vector)");
            else if (r.Strategies.Length != queries) Add("strategies", $"needs one strategy per vector ({queries}), got {r.Strategies.Length}");
        }
        if (r.RerankFactors is { } rerank)
        {
            if (rerank.Length != queries) Add("rerankFactors", $"needs one re-rank factor per vector ({queries}), got {rerank.Length}");
            for (int q = 0; q < rerank.Length && errors.Count < JsonBody.MaxErrors; q++)
                if (rerank[q] is < 1 or > SearchOptions.MaxRerankFactor) Add($"rerankFactors[{q}]", $"must be between 1 and {SearchOptions.MaxRerankFactor:N0}");
        }
        if (r.ExactPlans is { } exact && exact.Length != queries) Add("exactPlans", $"needs one entry per vector ({queries}), got {exact.Length}");
        for (int q = 0; q < (r.Strategies?.Length ?? 0); q++)
            if (r.Strategies![q] is not (nameof(FilterStrategy.Partitions) or nameof(FilterStrategy.Direct)))
                Add($"strategies[{q}]", $"must be \"{nameof(FilterStrategy.Partitions)}\" or \"{nameof(FilterStrategy.Direct)}\"");
        // A coordinator sends the query's filter, bounded, and for a strong read the tail's deleteWheres within their own bound.
        filter = ValidateAttributes(r.Filter, r.Include, index, errors, FilterCompiler.MaxScanClauses);
        // Decoding stops past the node's bound, so its memory follows Squash:MaxMaskedRows, not the body.
        if (r.ExcludedRows is { } excludedRows && Squash.Search.Writes.RowSetCache.Shared.Get(excludedRows, out var excludedProblem, settings.MaxMaskedRows) is null)
            Add("excludedRows", excludedProblem!);

        if (r.Node is null) Add("node", "is required");
        else
        {
            long limit = Math.Max(settings.MaxTreeNodes, TreeNodes(settings.Branching, settings.Depth));
            // Levels below the node that receives the request: a query's tree has at most MaxDepth (or the app's own depth).
            // Each level is a hop that the level above hedges while it waits, so a deep chain of few nodes multiplies invocations.
            int maxLevels = Math.Max(MaxDepth, settings.Depth);
            int nodes = 0;
            var inTree = new HashSet<int>();
            CheckNode("node", r.Node, level: 0);
            if (nodes > limit + 1) Add("node", $"describes more than {limit + 1} nodes; at most {limit + 1} (the coordinator and {limit} scan nodes) are allowed");

            void CheckNode(string field, ScanNode node, int level)
            {
                bool root = level == 0;
                // Counting stops past the limit, so a deep or wide body costs no more than a legal one.
                if (++nodes > limit + 1 || errors.Count >= JsonBody.MaxErrors) return;
                if (level > maxLevels)
                {
                    Add(field, $"lies {level} levels below the node that receives the request; a tree has at most {maxLevels} (options.depth)");
                    return;
                }
                if (node.Id < (root ? -1 : 0) || node.Id >= limit) Add($"{field}.id", $"must be a tree slot between {(root ? -1 : 0)} and {limit - 1}, got {node.Id}");
                if (node.Partitions is null) Add($"{field}.partitions", "is required");
                else
                {
                    CheckPartitions($"{field}.partitions", node.Partitions, partitions, Add);
                    // Each partition has one node: two would both scan it and the merge would hold its rows twice.
                    foreach (int p in node.Partitions)
                        if (p >= 0 && p < partitions && !inTree.Add(p)) { Add($"{field}.partitions", $"partition {p} is also another node's"); break; }
                }
                if (node.Children is null) Add($"{field}.children", "is required");
                else
                    for (int i = 0; i < node.Children.Length && nodes <= limit + 1; i++)
                    {
                        if (node.Children[i] is null) Add($"{field}.children[{i}]", "must be a node, got null");
                        else CheckNode($"{field}.children[{i}]", node.Children[i], level + 1);
                    }
            }
        }
        return errors;
    }

    private static void CheckK(string field, int k, Action<string, string> add)
    {
        if (k < 1 || k > SearchOptions.MaxK) add(field, $"k must be between 1 and {SearchOptions.MaxK}, got {k}");
    }

    /// <summary>The documented range of every query option (README, HTTP API).</summary>
    private static void CheckOptions(QueryOptions o, Action<string, string> add)
    {
        if (o.Recall is { } recall)
        {
            if (!(recall > 0 && recall <= 1)) add("options.recall", $"must be a number in (0, 1], got {recall}");
            else if (o.CentroidFactor is not null || o.RerankFactor is not null || o.MaxPartitions is not null)
                add("options.recall", "cannot be combined with centroidFactor, rerankFactor or maxPartitions: ask for a recall target, or set the plan yourself");
        }
        if (o.CentroidFactor is { } cf && !(cf >= 1 && cf <= SearchOptions.MaxCentroidFactor))
            add("options.centroidFactor", $"must be a number between 1 and {SearchOptions.MaxCentroidFactor}, got {cf}");
        if (o.HammingKeepPercent is { } h && !(h > 0 && h <= SearchOptions.MaxHammingKeepPercent))
            add("options.hammingKeepPercent", $"must be in (0, {SearchOptions.MaxHammingKeepPercent}], got {h}");
        if (o.RerankFactor is { } rf && rf is < 1 or > SearchOptions.MaxRerankFactor)
            add("options.rerankFactor", $"must be between 1 and {SearchOptions.MaxRerankFactor}, got {rf}");
        if (o.MaxPartitions is { } cap && cap < 1) add("options.maxPartitions", $"must be at least 1, got {cap}");
        if (o.Branching is { } b && b is < 1 or > MaxBranching) add("options.branching", $"must be between 1 and {MaxBranching}, got {b}");
        if (o.Depth is { } l && l is < 0 or > MaxDepth) add("options.depth", $"must be between 0 and {MaxDepth}, got {l}");
        if (o.Consistency is { } c && c is not (StrongConsistency or EventualConsistency))
            add("options.consistency", $"must be \"{StrongConsistency}\" or \"{EventualConsistency}\", got \"{c}\"");
    }

    public const int MaxBranching = 16, MaxDepth = 4;
    /// <summary>options.consistency: the published version alone (the default), or with the write-ahead log's tail.</summary>
    public const string EventualConsistency = "eventual", StrongConsistency = "strong";

    private static void CheckVectors(string field, float[][] vectors, int dimensions, string metric, int maxBatch, Dictionary<string, string[]> errors, Action<string, string> add)
    {
        if (vectors.Length == 0) add(field, "the batch is empty");
        if (vectors.Length > maxBatch) add(field, $"a batch holds at most {maxBatch} vectors, got {vectors.Length}");
        for (int i = 0; i < vectors.Length && errors.Count < JsonBody.MaxErrors; i++)
            CheckVector($"{field}[{i}]", vectors[i], dimensions, metric, add);
    }

    private static void CheckPartitions(string field, int[]? list, int partitions, Action<string, string> add)
    {
        if (list is null) { add(field, "must be an array of partition numbers, got null"); return; }
        if (list.Length > partitions) { add(field, $"lists {list.Length} partitions; the index has {partitions}"); return; }
        // A partition listed twice would be scanned twice and its rows merged twice into one top-k.
        var seen = new bool[partitions];
        foreach (int p in list)
        {
            if (p < 0 || p >= partitions) { add(field, $"partition numbers must be between 0 and {partitions - 1}, got {p}"); return; }
            if (seen[p]) { add(field, $"lists partition {p} twice"); return; }
            seen[p] = true;
        }
    }

    /// <summary>
    /// The parts checked against the index's schema: every <c>include</c> name must exist, and the filter must
    /// compile (its errors are reported under <c>filter</c> plus the JSON path of the offending part). Returns the compiled
    /// filter (null without one, or when it does not compile), so that the request need not compile it again.
    /// </summary>
    public static CompiledFilter? ValidateAttributes(QueryRequest r, OpenedIndex index, Dictionary<string, string[]> errors) =>
        ValidateAttributes(r.Filter, r.Include, index, errors, FilterCompiler.MaxClauses);

    /// <param name="maxClauses">A client's filter holds at most <see cref="FilterCompiler.MaxClauses"/>; a scan node's, the coordinator's, at most
    /// <see cref="FilterCompiler.MaxScanClauses"/>, since a strong read adds the log tail's deleteWhere filters.</param>
    private static CompiledFilter? ValidateAttributes(System.Text.Json.JsonElement? filter, string[]? include, OpenedIndex index, Dictionary<string, string[]> errors,
        int maxClauses)
    {
        if (include is not null)
        {
            if (include.Length > 64) errors["include"] = [$"at most 64 attributes can be included, got {include.Length}"];
            var schema = index.Manifest.Attributes;
            for (int i = 0; i < include.Length && errors.Count < JsonBody.MaxErrors; i++)
            {
                var name = include[i];
                if (name is null) errors[$"include[{i}]"] = ["must be an attribute name, got null"];
                else if ((schema?.IndexOf(name) ?? -1) < 0)
                    errors[$"include[{i}]"] = [schema is null
                        ? $"the index has no attributes, so '{name}' cannot be included"
                        : $"the index has no attribute '{name}' (it has: {string.Join(", ", schema.Attributes.Select(a => a.Name))})"];
            }
        }
        if (filter is { } f)
        {
            try { return index.Filters.Compile(f, maxClauses); }
            catch (FilterException e) { errors[FilterField(e.Path)] = [e.Detail]; }
        }
        return null;
    }

    /// <summary>A filter's JSON path as a request field: <c>$.price.$lt</c> → <c>filter.price.$lt</c>.</summary>
    public static string FilterField(string path) => path == "$" ? "filter" : "filter" + path[1..];

    private static void CheckVector(string field, float[]? v, int dimensions, string metric, Action<string, string> add)
    {
        if (v is null) { add(field, "is null"); return; }
        if (v.Length != dimensions) { add(field, $"has {v.Length} dimensions; the index has {dimensions}"); return; }
        if (v.Any(x => !float.IsFinite(x))) { add(field, "contains a value that is not a finite number"); return; }
        if (NormProblem(v, metric) is { } problem) add(field, problem);
    }

    /// <summary>
    /// What makes a vector of finite values unusable (null: nothing): a norm past <see cref="Squash.Core.MetricSpace.MaxVectorNorm"/>
    /// (its float32 distances would overflow to +∞), or no direction under cosine. Queries and writes are held to the same rule.
    /// </summary>
    public static string? NormProblem(ReadOnlySpan<float> v, string metric)
    {
        double squares = 0;
        foreach (float x in v) squares += (double)x * x;
        return NormProblem(squares, metric);
    }

    /// <inheritdoc cref="NormProblem(ReadOnlySpan{float}, string)"/>
    public static string? NormProblem(double squaredNorm, string metric)
    {
        return Squash.Core.MetricSpace.CheckNorm(squaredNorm, Squash.Core.MetricSpace.Parse(metric)) switch
        {
            Squash.Core.MetricSpace.NormProblem.TooLong =>
                $"has norm {Math.Sqrt(squaredNorm):G6}, above the largest norm a vector may have ({Squash.Core.MetricSpace.MaxVectorNorm:G6}): its distances would overflow",
            Squash.Core.MetricSpace.NormProblem.ZeroUnderCosine => "is all zeros, which has no direction (the index uses cosine)",
            _ => null,
        };
    }

    /// <summary>
    /// The engine's options for a request: a recall target (the request's, or <see cref="SearchOptions.DefaultRecall"/>
    /// when it sets neither a target nor CF and R), or CF and R as given (either one missing takes its default).
    /// </summary>
    public static SearchOptions ToSearchOptions(int k, QueryOptions? o)
    {
        var d = new SearchOptions();
        bool planGiven = o?.CentroidFactor is not null || o?.RerankFactor is not null || o?.MaxPartitions is not null;
        return new SearchOptions
        {
            K = k,
            Recall = planGiven ? null : o?.Recall ?? SearchOptions.DefaultRecall,
            Exact = o?.Exact ?? false,
            CentroidFactor = o?.CentroidFactor ?? d.CentroidFactor,
            HammingKeepPercent = o?.HammingKeepPercent ?? d.HammingKeepPercent,
            RerankFactor = o?.RerankFactor ?? d.RerankFactor,
            MaxPartitions = o?.MaxPartitions,
        };
    }
}
