using Squash.Index.Model;
using Squash.Search.Filters;
using Squash.Core.Collections;
using Squash.Core.Kernels;

namespace Squash.Search;

/// <summary>
/// The query pipeline: a plan of passes over partitions in centroid-distance order (<see cref="Plan"/>,
/// <see cref="NextPass"/>), each pass scanned partition by partition (<see cref="ScanPartitions(QueryContext, ReadOnlySpan{int}, float[], SearchOptions, TopK, QueryStats, Func{int, PartitionData})"/>)
/// into a top-k — in one process (<see cref="Search"/>) or split over the nodes of an invocation tree.
/// Thread-safe: each thread gets its own scanner.
/// </summary>
public sealed class SearchEngine
{
    private readonly ThreadLocal<PartitionScanner> _scanner = new(() => new PartitionScanner());

    public SearchEngine(OpenedIndex index) => Index = index;

    public OpenedIndex Index { get; }

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
    /// vectors, so that an answer is never short when the index has K vectors. With <see cref="SearchOptions.MaxPartitions"/>,
    /// at most that many, or as many as hold K vectors (<see cref="CapCount"/>).
    /// </summary>
    public static int SelectCount(ReadOnlySpan<int> order, ReadOnlySpan<float> distances, ReadOnlySpan<int> sizes, SearchOptions options)
    {
        if (options.Exact || order.Length == 0) return order.Length;
        Span<int> count = stackalloc int[1];
        SelectCounts(order, distances, sizes, options.K, [options.CentroidFactor], count);
        return options.MaxPartitions is { } cap && count[0] > cap ? CapCount(count[0], cap, HoldingCount(order, sizes, options.K)) : count[0];
    }

    /// <summary>The partitions a plan of <paramref name="count"/> scans under a cap: at most <paramref name="cap"/>, never fewer than <paramref name="holding"/> (<see cref="HoldingCount"/>).</summary>
    public static int CapCount(int count, int cap, int holding) => Math.Min(count, Math.Max(cap, holding));

    /// <summary>The shortest prefix of <paramref name="order"/> (at least one partition) whose partitions hold K vectors, or all of them.</summary>
    public static int HoldingCount(ReadOnlySpan<int> order, ReadOnlySpan<int> sizes, int k)
    {
        int count = Math.Min(1, order.Length);
        long held = order.Length == 0 ? 0 : sizes[order[0]];
        while (count < order.Length && held < k) held += sizes[order[count++]];
        return count;
    }

    /// <summary>
    /// <see cref="SelectCount"/> for each of ascending <paramref name="centroidFactors"/> (not exact) in one walk: a larger
    /// factor keeps every partition a smaller one kept, so each count resumes where the one before stopped.
    /// </summary>
    public static void SelectCounts(ReadOnlySpan<int> order, ReadOnlySpan<float> distances, ReadOnlySpan<int> sizes, int k,
        ReadOnlySpan<double> centroidFactors, Span<int> counts)
    {
        if (counts.Length < centroidFactors.Length) throw new ArgumentException("fewer counts than centroid factors", nameof(counts));
        int count = Math.Min(1, order.Length);
        long held = order.Length == 0 ? 0 : sizes[order[0]];
        for (int g = 0; g < centroidFactors.Length; g++)
        {
            if (g > 0 && centroidFactors[g] < centroidFactors[g - 1]) throw new ArgumentException("centroid factors must ascend", nameof(centroidFactors));
            if (order.Length > 0)
            {
                double limit = distances[order[0]] * centroidFactors[g];
                while (count < order.Length && (distances[order[count]] <= limit || held < k)) held += sizes[order[count++]];
            }
            counts[g] = count;
        }
    }

    /// <summary>
    /// One query in this process, run exactly as an invocation tree runs it: <see cref="Plan"/>, then each pass
    /// through <see cref="ScanPartitions(QueryContext, ReadOnlySpan{int}, float[], SearchOptions, TopK, QueryStats)"/>,
    /// then <see cref="NextPass"/> with the answer's size until it hands out nothing. Splitting a pass over many
    /// nodes with their own top-k and merging gives the same answer (PassPlanTests prove it).
    /// </summary>
    public SearchResult Search(ReadOnlySpan<float> query, SearchOptions options)
    {
        var ctx = new QueryContext(Index, query);
        var plan = Plan(ctx, options);
        var top = NewTopK(options);
        var nodeOptions = plan.NodeOptions();
        for (var pass = plan.Partitions; pass.Length > 0; pass = NextPass(plan, top.Count))
            ScanPartitions(ctx, pass, plan.CentroidDistances, nodeOptions, top, plan.Stats);
        Certify(plan, top);
        return Finish(top, ctx, plan.Stats);
    }

    public TopK NewTopK(SearchOptions options) => new(Math.Min(options.K, (int)Math.Max(1, Index.Manifest.Count)));

    /// <summary>
    /// Plans a query, filtered or not: the first pass's partitions (nearest centroid first), every centroid
    /// distance, the strategy and the state <see cref="NextPass"/> needs. Fills the plan's stats with the
    /// estimated matches, the strategy and the partitions planned.
    /// <list type="bullet">
    /// <item>Unfiltered: the partitions within CF × the nearest centroid distance, extended until they hold K vectors.</item>
    /// <item>Filtered, "partitions": in centroid-distance order until both the CF threshold is passed and the estimated
    /// matches reach FilterMargin·K; the threshold is anchored on the nearest partition that holds a fair share of
    /// matches (<see cref="AnchorDensity"/>), and never nearer than where the estimated matches reach K.</item>
    /// <item>Filtered, "direct": every partition that can match, scanned by exact distance on its matching vectors;
    /// chosen by the cost rule (or forced by <see cref="SearchOptions.FilterStrategy"/>). One pass, exact.</item>
    /// <item>"none": no partition can match; nothing to scan.</item>
    /// </list>
    /// Exact mode plans every partition that can match in the first pass.
    /// </summary>
    public QueryPlan Plan(QueryContext query, SearchOptions options)
    {
        options.Validate();
        var (order, dist) = RankPartitions(query);
        var manifest = Index.Manifest;
        if (options.Filter is not { MatchesAll: false } filter)
        {
            double? target = RecallTargetOf(options);
            var resolved = RecallPlanner.Resolve(manifest.Calibration, options, out double? predicted, out double? share,
                draw: RecallPlanner.Draw(query.VectorHash));
            var stats = NewStats(target, predicted, resolved, share);
            stats.PredictedAtK = RecallPlanner.PredictedAtK(manifest.Calibration, resolved, predicted, options.K);
            // No per-partition estimates: a later pass (rare without a filter) takes partition sizes.
            int selected = SelectCount(order, dist, Index.Routing.PartitionSizes, resolved);
            stats.PartitionsPlanned = selected;
            return new QueryPlan(order[..selected], dist, "partitions", TargetOf(resolved), stats, order, null, null, selected, resolved);
        }
        var estimates = FilterEstimates.Of(filter, manifest);
        // A filter on an attribute with value centroids ranks partitions by the value key (ValueOrder); others by centroid.
        var keyed = ValueOrder(query.Internal, order, dist, filter);
        return PlanFiltered(FilteredAnchors.Of(manifest, keyed?.Order ?? order, dist, estimates, options.K, keyed?.Keys), options,
            RecallPlanner.Draw(query.VectorHash, filter.Key));
    }

    /// <summary>A filter's value term is used for the key while it names at most this many values (each costs a pass over the partitions).</summary>
    public const int MaxKeyValues = 8;

    /// <summary>
    /// The filtered ranking by value key, or null when <paramref name="filter"/> has no $eq/$in (alone or in an AND) on an
    /// attribute with value centroids: partition p's key is max(its centroid distance, the distance to the nearest centroid of
    /// its rows holding one of the filter's values), its centroid distance where it has no such centroid. A partition's
    /// matching rows may sit far from its centroid (the matching class's stragglers in another class's cell); the key puts
    /// it later without moving the cell a neighbour lies in (rows are assigned to the nearest partition centroid), so the
    /// own-class filter keeps the unfiltered order (bench/recall.md, "Where the anti-correlated family's misses lie").
    /// </summary>
    /// <param name="leaveOut">A base-sample calibration query: its own row (as stored, in this partition, with this value) is left out of its value centroid.</param>
    public (int[] Order, float[] Keys)? ValueOrder(ReadOnlySpan<float> query, int[] order, float[] dist, CompiledFilter filter, (int Partition, int Value, float[] Row)? leaveOut = null)
    {
        ArgumentNullException.ThrowIfNull(order);
        ArgumentNullException.ThrowIfNull(dist);
        ArgumentNullException.ThrowIfNull(filter);
        var routing = Index.Routing;
        if (routing.ValueCentroids.Count == 0) return null;
        if (filter.ValueTerm(a => routing.ValueCentroidsOf(a) is not null) is not { } term || term.Ids.Length > MaxKeyValues) return null;
        var vc = routing.ValueCentroidsOf(term.Attribute)!;
        int p = dist.Length, d = routing.InternalDimensions;
        var keys = new float[p];
        float[]? without = null;
        for (int q = 0; q < p; q++)
        {
            float best = float.PositiveInfinity;
            foreach (int v in term.Ids)
            {
                int n = vc.CountOf(q, v);
                if (n == 0) continue;
                var c = vc.CentroidOf(q, v, d);
                if (leaveOut is { } own && own.Partition == q && own.Value == v)
                {
                    if (n == 1) continue; // the query's own row was this value's only row here
                    without ??= new float[d];
                    for (int j = 0; j < d; j++) without[j] = (float)((n * (double)c[j] - own.Row[j]) / (n - 1));
                    c = without;
                }
                best = Math.Min(best, SquaredL2.Distance(query, c));
            }
            keys[q] = float.IsPositiveInfinity(best) ? dist[q] : Math.Max(dist[q], MathF.Sqrt(best));
        }
        var ranked = (int[])order.Clone();
        Array.Sort(ranked, (a, b) => keys[a] != keys[b] ? keys[a].CompareTo(keys[b]) : a.CompareTo(b));
        return (ranked, keys);
    }

    /// <summary>
    /// The filtered part of <see cref="Plan"/>, from the ranked partitions and the filter's estimates: the recall target
    /// resolves with the filtered calibration of the query's estimated selectivity; <paramref name="draw"/> is the query's
    /// place for a mixed plan (<see cref="RecallPlanner.Draw"/>; 0 runs a mix's higher plan).
    /// </summary>
    public QueryPlan PlanFiltered(int[] order, float[] dist, FilterEstimates estimates, SearchOptions options, double draw = 0)
    {
        ArgumentNullException.ThrowIfNull(options);
        return PlanFiltered(FilteredAnchors.Of(Index.Manifest, order, dist, estimates, options.K), options, draw);
    }

    /// <summary>
    /// <see cref="PlanFiltered(int[], float[], FilterEstimates, SearchOptions)"/> with the query's anchors already found.
    /// </summary>
    public QueryPlan PlanFiltered(FilteredAnchors anchors, SearchOptions options, double draw = 0)
    {
        ArgumentNullException.ThrowIfNull(anchors);
        ArgumentNullException.ThrowIfNull(options);
        double? recallTarget = RecallTargetOf(options);
        double selectivity = anchors.Estimates.Total / Math.Max(1, Index.Manifest.Count);
        var resolved = RecallPlanner.Resolve(Index.Manifest.Calibration, options, out double? predicted, out double? share,
            selectivity, anchors.AnchorRatio, draw);
        var plan = PlanFilteredSweep(anchors, resolved, [resolved.CentroidFactor], recallTarget, predicted, share)[0];
        plan.Stats.PredictedAtK = RecallPlanner.PredictedAtK(Index.Manifest.Calibration, resolved, predicted, options.K, selectivity, anchors.AnchorRatio);
        return plan;
    }

    /// <summary>
    /// The plans <see cref="PlanFiltered(FilteredAnchors, SearchOptions)"/> gives for each of <paramref name="centroidFactors"/>
    /// (ascending) with the rest of <paramref name="options"/>, from one walk down the partitions instead of one each: a larger
    /// CF only moves the threshold further, so each plan's partitions extend the one before. The recall calibration plans its
    /// whole CF grid this way.
    /// </summary>
    public QueryPlan[] PlanFiltered(FilteredAnchors anchors, SearchOptions options, IReadOnlyList<double> centroidFactors)
    {
        ArgumentNullException.ThrowIfNull(anchors);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(centroidFactors);
        if (options.Recall is not null) throw new ArgumentException("a recall target picks its own CF: plan a grid of CFs without one", nameof(options));
        for (int i = 0; i < centroidFactors.Count; i++)
            if (!(centroidFactors[i] >= 1) || (i > 0 && centroidFactors[i] < centroidFactors[i - 1]))
                throw new ArgumentException("centroid factors must be ≥ 1 and ascending", nameof(centroidFactors));
        return PlanFilteredSweep(anchors, options, centroidFactors, null, options.Exact ? 1 : null);
    }

    private QueryPlan[] PlanFilteredSweep(FilteredAnchors anchors, SearchOptions options, IReadOnlyList<double> centroidFactors,
        double? recallTarget, double? predicted, double? share = null)
    {
        var manifest = Index.Manifest;
        if (options.K != anchors.K) throw new ArgumentException($"anchors found for k = {anchors.K}, planned with k = {options.K}", nameof(anchors));
        var estimates = anchors.Estimates;
        var order = anchors.Order;
        var dist = anchors.Distances;
        var keys = anchors.Keys;
        int p = order.Length;
        int target = TargetOf(options);
        var est = estimates.PerPartition;
        var canMatch = estimates.CanMatch;
        var plans = new QueryPlan[centroidFactors.Count];
        int next = 0;
        SearchOptions OptionsAt(int i) => centroidFactors.Count == 1 && centroidFactors[0] == options.CentroidFactor ? options : options with { CentroidFactor = centroidFactors[i] };
        QueryStats StatsOf(SearchOptions o)
        {
            var stats = NewStats(recallTarget, predicted, o, share);
            stats.EstimatedMatches = estimates.Total;
            return stats;
        }
        if (anchors.FirstMatching < 0)
        {
            for (; next < plans.Length; next++)
            {
                var o = OptionsAt(next);
                var stats = StatsOf(o);
                stats.Strategy = "none";
                plans[next] = new QueryPlan([], dist, "none", target, stats, order, est, canMatch, p, o, keys);
            }
            return plans;
        }

        // Each plan's partition list is a prefix of the next one's (WalkFiltered).
        var plan = new List<int>();
        int[]? direct = null; // every partition that can match: one array for all of the grid's direct plans (read only)
        WalkFiltered(manifest, anchors, centroidFactors, options.FilterMargin, options.K, options.Exact, [options.RerankCandidates], plan, (cursor, planCost) =>
        {
            var o = OptionsAt(next);
            var stats = StatsOf(o);
            if (o.FilterStrategy == FilterStrategy.Direct || (o.FilterStrategy == FilterStrategy.Auto && anchors.DirectCost <= planCost[0]))
            {
                var all = direct ??= order.Where(q => canMatch[q]).ToArray();
                stats.Strategy = "direct";
                stats.PartitionsPlanned = all.Length;
                plans[next++] = new QueryPlan(all, dist, "direct", target, stats, order, est, canMatch, p, o, keys);
                return;
            }
            stats.PartitionsPlanned = plan.Count;
            plans[next++] = new QueryPlan(plan.ToArray(), dist, "partitions", target, stats, order, est, canMatch, cursor, o, keys);
        });
        return plans;
    }

    /// <summary>
    /// The filtered planner's walk down the partitions, shared by the query planner and the recall calibration (which plans
    /// a grid of CFs and Rs for every query it replays): partitions that can match are added in key order, and wherever
    /// the threshold of the next CF (ascending) stops the walk, or at the end, <paramref name="emit"/> gets the cursor there
    /// and the cost of the partitions added so far for each of <paramref name="rerankCandidates"/> (an array the walk goes
    /// on writing). A larger CF only moves the threshold further, so each CF's partitions extend the one before (read off
    /// <paramref name="plan"/> when given). Call only when some partition can match (<see cref="FilteredAnchors.FirstMatching"/>).
    /// </summary>
    internal static void WalkFiltered(IndexManifest manifest, FilteredAnchors anchors, IReadOnlyList<double> centroidFactors, double filterMargin,
        int k, bool exact, ReadOnlySpan<int> rerankCandidates, List<int>? plan, Action<int, double[]> emit)
    {
        var order = anchors.Order;
        var keys = anchors.Keys;
        var est = anchors.Estimates.PerPartition;
        var canMatch = anchors.Estimates.CanMatch;
        int p = order.Length, cfs = centroidFactors.Count, next = 0;
        double Limit(double centroidFactor) => exact ? double.PositiveInfinity : Math.Max(
            keys[order[anchors.Dense]] * centroidFactor,
            MarginPast(keys[order[anchors.Fill]], keys[order[0]], centroidFactor));
        double issued = 0;
        var planCost = new double[rerankCandidates.Length];
        int m = manifest.GlobalDimensions, d = manifest.InternalDimensions;
        bool indexed = anchors.Estimates.Indexable;
        double limit = cfs > 0 ? Limit(centroidFactors[0]) : 0;
        for (int cursor = 0; cursor < p && next < cfs; cursor++)
        {
            int q = order[cursor];
            if (!canMatch[q]) continue;
            while (next < cfs && keys[q] > limit && issued >= filterMargin * k)
            {
                emit(cursor, planCost);
                if (++next < cfs) limit = Limit(centroidFactors[next]);
            }
            if (next == cfs) break;
            plan?.Add(q);
            issued += est[q];
            var e = manifest.Partitions[q];
            // Few candidates take exact distances directly (PartitionScanner), many the rotation, bounds and re-rank.
            bool coded = est[q] * d > (double)e.CodedDimensions * m;
            double visit = PartitionVisitCost + (indexed ? 0 : e.Count);
            for (int r = 0; r < planCost.Length; r++)
                planCost[r] += visit + (coded
                    ? (double)e.CodedDimensions * m + est[q] * e.CodedDimensions + Math.Min(est[q], rerankCandidates[r]) * d
                    : est[q] * d);
        }
        for (; next < cfs; next++) emit(p, planCost);
    }

    /// <summary>
    /// What a filtered plan takes from the query and its filter alone, whatever its CF and R: the ranked partitions, the
    /// estimates, the two anchors the CF threshold is set from, and the direct scan's cost.
    /// <list type="bullet">
    /// <item>The dense anchor: the nearest partition whose estimated match density is at least <see cref="AnchorDensity"/> × the
    /// index-wide one. When the filter is anti-correlated with the query (it asks for another class), nearby
    /// partitions hold a few stragglers and the true nearest matches sit in the matching class's own region,
    /// which is searched like an unfiltered query whose nearest partition is that anchor: CF × its distance.</item>
    /// <item>The fill anchor: where the estimated matches first reach K, since the answer is only expected to fill
    /// there (a threshold anchored before it returns far matches for a selective filter). Past it the plan
    /// grants the margin unfiltered search grants past the nearest partition, in squared distance
    /// (<see cref="MarginPast"/>): a partition's points lie about its spread beyond its centroid, and that spread does not grow
    /// with distance; CF × the fill distance would grow with it and take in hundreds of partitions for a
    /// selective filter on a large index (bench/filters.md).</item>
    /// </list>
    /// The threshold reaches as far as the farther of the two demands.
    /// </summary>
    public sealed class FilteredAnchors
    {
        private FilteredAnchors(int[] order, float[] distances, float[] keys, FilterEstimates estimates, int k, int firstMatching, int dense, int fill, double directCost)
        {
            Order = order;
            Distances = distances;
            Keys = keys;
            Estimates = estimates;
            K = k;
            FirstMatching = firstMatching;
            Dense = dense;
            Fill = fill;
            DirectCost = directCost;
        }

        /// <summary>The partitions in ascending <see cref="Keys"/>.</summary>
        public int[] Order { get; }
        /// <summary>Centroid distances (what the scans' bounds use).</summary>
        public float[] Distances { get; }
        /// <summary>What the plan ranks and thresholds by: the value key (<see cref="ValueOrder"/>), or the centroid distances.</summary>
        public float[] Keys { get; }
        /// <summary>
        /// The dense anchor's key over the nearest centroid distance (1 with no partition that can match): large when the
        /// filter's matches lie away from the query. The filtered calibration bands by it.
        /// </summary>
        public double AnchorRatio
        {
            get
            {
                if (Dense < 0) return 1;
                float nearest = float.PositiveInfinity;
                foreach (float x in Distances) nearest = Math.Min(nearest, x);
                return nearest > 0 ? Keys[Order[Dense]] / nearest : 1;
            }
        }
        public FilterEstimates Estimates { get; }
        public int K { get; }
        /// <summary>Position in <see cref="Order"/> of the first partition that can match; −1 when none can.</summary>
        public int FirstMatching { get; }
        /// <summary>Positions in <see cref="Order"/> of the dense and the fill anchor.</summary>
        public int Dense { get; }
        public int Fill { get; }
        /// <summary>The direct scan's cost: it visits every partition that can match and takes an exact distance per match.</summary>
        public double DirectCost { get; }

        /// <param name="order">The partitions in ascending <paramref name="keys"/> (or <paramref name="dist"/> without keys).</param>
        /// <param name="keys">The value keys (<see cref="ValueOrder"/>); null: the centroid distances.</param>
        public static FilteredAnchors Of(IndexManifest manifest, int[] order, float[] dist, FilterEstimates estimates, int k, float[]? keys = null)
        {
            ArgumentNullException.ThrowIfNull(manifest);
            ArgumentNullException.ThrowIfNull(order);
            ArgumentNullException.ThrowIfNull(dist);
            ArgumentNullException.ThrowIfNull(estimates);
            int p = order.Length;
            var est = estimates.PerPartition;
            var canMatch = estimates.CanMatch;
            double total = estimates.Total;
            int firstMatching = Array.FindIndex(order, q => canMatch[q]);
            double density = total / Math.Max(1, manifest.Count);
            int dense = firstMatching, fill = p - 1;
            if (firstMatching >= 0)
            {
                for (int i = firstMatching; i < p; i++)
                {
                    int q = order[i];
                    if (canMatch[q] && est[q] >= AnchorDensity * density * manifest.Partitions[q].Count) { dense = i; break; }
                }
                double filled = 0;
                for (int i = firstMatching; i < p; i++)
                {
                    filled += est[order[i]];
                    if (filled >= k) { fill = i; break; }
                }
            }
            bool indexed = estimates.Indexable;
            double directCost = total * manifest.InternalDimensions;
            for (int i = 0; i < p; i++) if (canMatch[i]) directCost += PartitionVisitCost + (indexed ? 0 : manifest.Partitions[i].Count);
            return new FilteredAnchors(order, dist, keys ?? dist, estimates, k, firstMatching, dense, fill, directCost);
        }
    }

    private int TargetOf(SearchOptions options) => TargetOf(Index.Manifest, options.K);
    /// <summary>The answer size passes stop at (<see cref="QueryPlan.Target"/>): NewTopK's capacity.</summary>
    internal static int TargetOf(IndexManifest manifest, int k) => Math.Min(k, (int)Math.Max(1, manifest.Count));

    /// <summary>The target a query's stats report: none when it asked to be exact, since the planner then ignores the target.</summary>
    private static double? RecallTargetOf(SearchOptions requested) => requested.Exact ? null : requested.Recall;

    // An exact plan runs no CF, R or filter margin: its stats leave them out rather than report the defaults it ignored.
    private static QueryStats NewStats(double? recallTarget, double? predicted, SearchOptions resolved, double? share = null) => new()
    {
        Passes = 1,
        RecallTarget = recallTarget,
        PredictedRecall = predicted,
        PlanShare = share is { } p ? Math.Round(p, 4) : null,
        CentroidFactor = resolved.Exact ? null : resolved.CentroidFactor,
        RerankFactor = resolved.Exact ? null : resolved.RerankFactor,
        MaxPartitions = resolved.Exact || resolved.Filter is { MatchesAll: false } ? null : resolved.MaxPartitions,
        FilterMargin = resolved.Exact || resolved.FilterMargin == SearchOptions.DefaultFilterMargin ? null : resolved.FilterMargin,
    };

    /// <summary>
    /// The partitions of the next pass, given only how many results the merged answer holds after the passes so
    /// far (a tree merges partial top-k lists and only then knows that count). Empty when the answer is full
    /// (≥ <see cref="QueryPlan.Target"/>), for the direct strategy (already exact), or once every partition that can
    /// match was handed out — so the passes end, and an answer that ends short holds every match the scans kept:
    /// min(k, matches) results.
    /// <para>A pass continues down the centroid order from where the last one stopped, until the estimated
    /// matches reach FilterMargin × (missing results) × 2^(passes − 1), and then, like the first pass, through
    /// every partition within the CF margin (<see cref="MarginPast"/>) of where that happened: stopping right where the count is predicted
    /// to fill keeps whatever far matches came first. The doubling bounds the passes when the estimates are
    /// optimistic (correlated attributes) to about log₂ of the partitions.</para>
    /// Deterministic: the same calls on the same plan give the same passes.
    /// </summary>
    public int[] NextPass(QueryPlan plan, int resultsSoFar)
    {
        if (plan.Strategy != "partitions" || resultsSoFar >= plan.Target) return [];
        double need = PassNeed(plan.Margin, plan.Target, resultsSoFar, plan.Passes);
        var pass = new List<int>();
        plan.Cursor = WalkPass(plan.Order, plan.Keys, plan.CanMatch, plan.Estimates, Index.Routing.PartitionSizes, plan.Cursor, need, plan.CentroidFactor, pass, out _);
        if (pass.Count == 0) return [];
        plan.Stats.Passes++;
        plan.Stats.PartitionsPlanned += pass.Count;
        return pass.ToArray();
    }

    /// <summary>The estimated matches a later pass walks to: margin × missing results × 2^(passes so far − 1).</summary>
    internal static double PassNeed(double margin, int target, int resultsSoFar, int passes) =>
        margin * (target - resultsSoFar) * Math.Pow(2, passes - 1);

    /// <summary>
    /// One later pass's walk (<see cref="NextPass"/>) from <paramref name="cursor"/> in <paramref name="order"/>: the
    /// partitions it hands out (added to <paramref name="pass"/> when given) until the estimated matches reach
    /// <paramref name="need"/> and then through the CF margin past that point; returns the cursor after it.
    /// </summary>
    /// <param name="estimates">Estimated matches per partition; null: <paramref name="sizes"/> (an unfiltered plan).</param>
    internal static int WalkPass(int[] order, float[] keys, bool[]? canMatch, double[]? estimates, int[]? sizes, int cursor, double need,
        double centroidFactor, List<int>? pass, out int handedOut)
    {
        double issued = 0, limit = double.PositiveInfinity;
        handedOut = 0;
        int i = cursor;
        for (; i < order.Length; i++)
        {
            int q = order[i];
            if (keys[q] > limit) break;
            if (canMatch is not null && !canMatch[q]) continue;
            pass?.Add(q);
            handedOut++;
            issued += estimates is not null ? estimates[q] : sizes![q];
            if (issued >= need && double.IsPositiveInfinity(limit)) limit = MarginPast(keys[q], keys[order[0]], centroidFactor);
        }
        return i;
    }

    /// <summary>
    /// Scans the given partitions into <paramref name="top"/> from the index in this process; see the overload
    /// with a partition source.
    /// </summary>
    public void ScanPartitions(QueryContext query, ReadOnlySpan<int> partitions, float[] centroidDistances,
        SearchOptions options, TopK top, QueryStats stats)
    {
        bool filtered = options.Filter is { MatchesAll: false };
        ScanPartitions(query, partitions, centroidDistances, options, top, stats,
            p => new PartitionData(Index.Codes(p), Index.Vectors(p), filtered ? Index.Attributes(p) : null));
    }

    /// <summary>
    /// Scans the given partitions into <paramref name="top"/>: the unit a tree node runs, on partitions the caller
    /// supplies (e.g. from a segment cache). Filtered queries need the attributes and an explicit
    /// <see cref="SearchOptions.FilterStrategy"/> (<see cref="QueryPlan.NodeOptions"/>): Partitions (codes, bounds,
    /// re-rank with the code-level filter inside) or Direct (exact distances on the matching vectors).
    /// Any subset, in any grouping, gives the same final answer once the partial top-k lists are merged: a
    /// candidate's fate depends on the running k-th distance only where it could not have entered the answer.
    /// </summary>
    public void ScanPartitions(QueryContext query, ReadOnlySpan<int> partitions, float[] centroidDistances,
        SearchOptions options, TopK top, QueryStats stats, Func<int, PartitionData> partitionOf)
    {
        var filter = options.Filter is { MatchesAll: false } f ? f : null;
        if (filter is not null && options.FilterStrategy == FilterStrategy.Auto)
            throw new ArgumentException("a filtered scan needs the plan's strategy (QueryPlan.NodeOptions): scan nodes never choose one", nameof(options));
        bool direct = filter is not null && options.FilterStrategy == FilterStrategy.Direct;
        var scanner = _scanner.Value!;
        foreach (int p in partitions)
        {
            if (CannotBeat(p, centroidDistances, top, stats)) continue;
            var data = partitionOf(p);
            if (direct) scanner.ScanMatching(query, data.Codes, data.Vectors, data.Attributes, filter!, top, stats, options);
            else scanner.Scan(query, data.Codes, data.Vectors, data.Attributes, top, options, stats);
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

    /// <summary>Safe skip: nothing in p can be closer than (centroid distance − radius); counted in the stats.</summary>
    private bool CannotBeat(int p, float[] dist, TopK top, QueryStats stats)
    {
        float gap = dist[p] - Index.Routing.Radii[p];
        if (gap <= 0 || gap * gap <= top.Threshold * (1 + 1e-5f)) return false;
        stats.PartitionsSkippedByBound++;
        stats.NoteSkipped(PartitionBound(p, dist));
        return true;
    }

    /// <summary>
    /// A lower bound on the squared distance from the query to every vector of partition p: (centroid distance −
    /// radius)², with the centroid distance shrunk by <see cref="RoundingMargin"/> since it was computed in float
    /// (the radius is already rounded up at build time).
    /// </summary>
    private float PartitionBound(int p, float[] dist)
    {
        float gap = dist[p] * (1 - RoundingMargin) - Index.Routing.Radii[p];
        return gap > 0 ? gap * gap : 0;
    }

    /// <summary>Relative margin on the float centroid distances in <see cref="PartitionBound"/> (well above their rounding error).</summary>
    private const float RoundingMargin = 1e-5f;

    /// <summary>
    /// Decides <see cref="QueryStats.Certified"/> for a query whose passes are all scanned and merged into
    /// <paramref name="top"/>, its scans' <see cref="QueryStats.SkippedBound"/> gathered in the plan's stats: certified
    /// when the smallest lower bound on anything passed over — rows the scans did not re-rank, partitions skipped by
    /// bound, partitions never planned and <paramref name="missing"/> ones (a tree branch that failed) — is at least
    /// the k-th distance found (with the scans' relative slack for float rounding). An answer short of k is certified
    /// only when nothing that could match was passed over. Partitions the filter's codes rule out hold no
    /// candidate. Exact plans are certified unless partitions are missing.
    /// </summary>
    public bool Certify(QueryPlan plan, TopK top, IReadOnlyCollection<int>? missing = null)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(top);
        var stats = plan.Stats;
        var dist = plan.CentroidDistances;
        float bound = stats.SkippedBound ?? float.PositiveInfinity;
        for (int i = plan.Cursor; i < plan.Order.Length; i++)
        {
            int p = plan.Order[i];
            if (plan.CanMatch is null || plan.CanMatch[p]) bound = Math.Min(bound, PartitionBound(p, dist));
        }
        if (missing is { Count: > 0 })
        {
            foreach (int p in missing) bound = Math.Min(bound, PartitionBound(p, dist));
        }
        else if (plan.Exact)
        {
            return stats.Certified = true;
        }
        // top.Threshold is +∞ while the answer is short: then only "nothing passed over" (bound +∞) certifies.
        return stats.Certified = bound >= top.Threshold * (1 + PartitionScanner.Slack);
    }

    /// <summary>The centroid distance up to which partitions are visited past an anchor: √(anchor² + (CF² − 1)·nearest²).</summary>
    public static double MarginPast(double anchor, double nearest, double centroidFactor) =>
        Math.Sqrt(anchor * anchor + (centroidFactor * centroidFactor - 1) * nearest * nearest);

    /// <summary>
    /// A partition anchors the CF threshold when its estimated match density is at least this share of the
    /// index-wide density. At 1.0 independent filters (where every partition sits near the average, half of
    /// them below it) would anchor past the query's own partitions and visit many times more of them
    /// (bench/filters.md); 0.5 still skips the near-empty partitions an anti-correlated filter (Fashion-MNIST labels) leaves.
    /// </summary>
    private const double AnchorDensity = 0.5;

    /// <summary>
    /// The cost rule's price of touching one partition at all (in multiply-adds): fetching its segments, the
    /// value-index lookups, the bound check. A visit finds the partition's structures cold in the cache, so it
    /// costs as much as a few thousand multiply-adds in the scans (bench/filters.md has the figures).
    /// </summary>
    private const double PartitionVisitCost = 2000;

    private SearchResult Finish(TopK top, QueryContext ctx, QueryStats stats) => Finish(top.ToSortedArray(), ctx, stats);
}
