namespace Squash.Functions.Tree;

/// <summary>The tree shape a query runs with, who chose it, and (when the planner did) what it predicted.</summary>
/// <param name="ChosenBy">"request" (options.branching/depth), "settings" (Squash__Branching/Depth), "objective:cost" / "objective:latency",
/// or "write-tail" (a strong query whose tail masks more rows than the nodes take, on the coordinator alone).</param>
/// <param name="PredictedP99Ms">The planner's p99 for the shape (typical + the measured tail, <see cref="PlannerConstants.P99"/>).</param>
/// <param name="Constants">The constants it planned with (measured or the configured priors).</param>
public sealed record TreeShapeChoice(int Branching, int Depth, string ChosenBy, double? PredictedCostUsd = null, double? PredictedMs = null,
    double? PredictedP99Ms = null, PlannerConstants? Constants = null);

/// <summary>
/// Cost-budgeted planning (Squash__Objective): picks the tree shape (b, L, or L = 0: the coordinator scans by itself) for a
/// query from how many partitions it visits and which processor pools answered within the last second (an instance
/// there is inside a billed activity period, so reusing it costs only its execution, while waking one costs its 1 s
/// minimum). A deliberately small model, documented in docs/cost.md; its time constants come from the coordinator's own
/// queries (<see cref="ShapeCalibration"/>), the configured ones are only the priors.
/// </summary>
public static class ShapePlanner
{
    /// <summary>The shapes considered; those over Squash__MaxTreeNodes, or with more slots than partitions at level 1, are skipped.</summary>
    private static readonly (int B, int L)[] Candidates = [(1, 0), (1, 1), (2, 1), (4, 1), (8, 1), (16, 1), (2, 2), (4, 2)];

    public const string Cost = "cost";
    public const string Latency = "latency";

    /// <summary>What is wrong with the objective settings, naming the setting (null: nothing).</summary>
    public static string? Check(FunctionSettings s)
    {
        if (s.Objective is not ("" or Cost or Latency))
            return $"Squash:Objective must be empty (the fixed shape of Squash:Branching/Depth), '{Cost}' or '{Latency}', got '{s.Objective}'";
        if (!(s.P99TargetMs > 0) || !double.IsFinite(s.P99TargetMs)) return $"Squash:P99TargetMs must be a positive number of milliseconds, got {s.P99TargetMs}";
        if (!(s.CostCapUsd > 0) || !double.IsFinite(s.CostCapUsd)) return $"Squash:CostCapUsd must be a positive number of dollars per query, got {s.CostCapUsd}";
        if (!(s.HopMs > 0) || !(s.PartitionScanMs > 0)) return "Squash:HopMs and Squash:PartitionScanMs must be positive";
        return null;
    }

    /// <param name="partitions">Partitions the query (or batch) visits.</param>
    /// <param name="pools">Processor pools (0: the tree's nodes call back into this app).</param>
    /// <param name="poolIsActive">Whether pool i answered within the last billed second.</param>
    /// <param name="constants">The time constants (null: the configured priors).</param>
    public static TreeShapeChoice Choose(FunctionSettings s, int partitions, int pools, Func<int, bool> poolIsActive, PlannerConstants? constants = null)
    {
        var c = constants ?? PlannerConstants.Priors(s);
        var options = new List<(int B, int L, double Cost, double Ms)>();
        foreach (var (b, l) in Candidates)
        {
            int slots = TreePlanner.SlotCount(b, l);
            if (slots > s.MaxTreeNodes || (l > 0 && b > Math.Max(1, partitions))) continue;
            var (cost, ms) = Predict(s, b, l, partitions, pools, poolIsActive, c);
            options.Add((b, l, cost, ms));
        }
        (int B, int L, double Cost, double Ms) best;
        if (s.Objective == Latency)
            best = options.Where(o => o.Cost <= s.CostCapUsd).DefaultIfEmpty(options.MinBy(o => o.Cost)).MinBy(o => (o.Ms, o.Cost));
        else
        {
            var considered = Considered(s, options, c);
            best = considered.Where(o => c.P99(o.Ms) <= s.P99TargetMs).DefaultIfEmpty(NearlyFastest(considered)).MinBy(o => (o.Cost, o.Ms));
        }
        return new TreeShapeChoice(best.B, best.L, "objective:" + (s.Objective == Latency ? Latency : Cost), best.Cost, Math.Round(best.Ms, 3),
            Math.Round(c.P99(best.Ms), 3), c);
    }

    /// <summary>
    /// The shapes the cost objective chooses among. When a shape this coordinator has measured runs within the target on
    /// its typical time, only the measured shapes: whatever then puts them over the target is the tail, a residual measured
    /// on the shapes that ran and added to every shape alike, which a shape never run cannot be shown to escape (a tree's time
    /// is its slowest node's, so fanning out widens a tail rather than narrows it). Without this a burst's tail and
    /// burst-inflated scan times made a 16-node tree, never measured, the "fastest" on a prediction derived from the
    /// coordinator's own samples, and it woke both pools (bench/serverless.md). Otherwise (nothing measured yet, or every
    /// measured shape too slow by itself) all shapes: trying another is then the only way to the target.
    /// </summary>
    private static List<(int B, int L, double Cost, double Ms)> Considered(FunctionSettings s, List<(int B, int L, double Cost, double Ms)> options,
        PlannerConstants c)
    {
        var measured = options.Where(o => c.Measured(o.B, o.L)).ToList();
        return measured.Any(o => o.Ms <= s.P99TargetMs) ? measured : options;
    }

    /// <summary>
    /// When no shape meets the p99 target: the cheapest of those within 10 % of the fastest typical time. Plain "the fastest"
    /// paid 16 nodes' executions and woken pools for a predicted 0.1 ms on 1M × 128 (bench/serverless.md).
    /// </summary>
    private static (int B, int L, double Cost, double Ms) NearlyFastest(List<(int B, int L, double Cost, double Ms)> options)
    {
        double fastest = options.Min(o => o.Ms);
        return options.Where(o => o.Ms <= fastest * 1.1).MinBy(o => (o.Cost, o.Ms));
    }

    /// <summary>
    /// Marginal cost and typical time of one shape. Nodes: the slots the partitions are expected to occupy (rendezvous
    /// hashing spreads p partitions over S slots: S·(1 − (1 − 1/S)^p)); executions: the coordinator plus each node; compute:
    /// 1 s of instance memory for each pool the nodes reach that is not active (the coordinator runs this query already);
    /// time: the call into the coordinator, a hop per level, plus the partitions scanned by the busiest node, the nodes working in parallel.
    /// </summary>
    public static (double CostUsd, double Ms) Predict(FunctionSettings s, int b, int l, int partitions, int pools, Func<int, bool> poolIsActive,
        PlannerConstants? constants = null)
    {
        var c = constants ?? PlannerConstants.Priors(s);
        int slots = l == 0 ? 0 : TreePlanner.SlotCount(b, l);
        double nodes = slots == 0 ? 0 : Math.Min(partitions, slots * (1 - Math.Pow(1 - 1.0 / slots, partitions)));
        int reached = slots == 0 ? 0 : Math.Min(pools, (int)Math.Ceiling(nodes));
        int woken = Enumerable.Range(0, reached).Count(p => !poolIsActive(p));
        double cost = PriceTable.ComputeCost(woken * PriceTable.MinimumPeriodMs, s.InstanceMemoryMb) + PriceTable.ExecutionsCost(1 + (long)Math.Ceiling(nodes));
        double perNode = nodes == 0 ? partitions : Math.Ceiling(partitions / nodes);
        double ms = c.FrontMs + c.HopMs * l + c.ScanMs(l) * perNode;
        return (cost, ms);
    }
}

/// <summary>When each processor pool last answered this instance (what the planner calls active: within the last billed second).</summary>
public static class PoolActivity
{
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<int, long> LastAnswer = new();

    public static void Answered(int pool) => LastAnswer[pool] = System.Diagnostics.Stopwatch.GetTimestamp();

    public static bool IsActive(int pool) =>
        LastAnswer.TryGetValue(pool, out long at) && System.Diagnostics.Stopwatch.GetElapsedTime(at).TotalMilliseconds < PriceTable.MinimumPeriodMs;
}
