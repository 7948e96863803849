using Squash.Functions.Api;

namespace Squash.Functions.Tree;

/// <summary>The planner's time constants: a hop per tree level, the scan time of one partition, and the tail above the typical time.</summary>
/// <param name="TailMs">What p99 adds to the typical time (null: not measured yet; the planner then takes 2 × typical).</param>
/// <param name="Samples">How many of this coordinator's own queries the figures come from (0: the configured priors).</param>
public sealed record PlannerConstants(double HopMs, double PartitionScanMs, double? TailMs, int Samples)
{
    /// <summary>The configured priors (Squash__HopMs, Squash__PartitionScanMs), before anything is measured.</summary>
    public static PlannerConstants Priors(FunctionSettings s) => new(s.HopMs, s.PartitionScanMs, null, 0);

    /// <summary>The predicted p99 for a typical time: typical + the measured tail, or 3 × typical before it is measured.</summary>
    public double P99(double typicalMs) => typicalMs + (TailMs ?? 2 * typicalMs);
}

/// <summary>
/// The coordinator's running estimate of the planner's constants, from its own invocations: every single-vector, one-pass
/// query on warm instances reports its tree's level timings (<see cref="LevelTiming"/>), from which come the scan time per
/// partition (the busiest node's own work ÷ its partitions), the hop time (how much longer a level's slowest node took than
/// the slowest node one level down, which runs inside it) and the residual (the tree's measured time − the model's). The
/// planner uses the medians of the last <see cref="Window"/> samples of each, and for the tail the 99th percentile of the
/// residuals, once it has <see cref="MinSamples"/> of them; before, the configured priors. Nothing is assumed about the data:
/// a new index, a slower instance or a busier machine moves the figures within a window of queries.
/// </summary>
public sealed class ShapeCalibration
{
    public const int Window = 256;
    public const int MinSamples = 20;

    /// <summary>The coordinator app's estimate (one per process: an instance's own measurements).</summary>
    public static ShapeCalibration Shared { get; } = new();

    private readonly object _gate = new();
    private readonly Ring _scanMsPerPartition = new(Window), _hopMs = new(Window), _residualMs = new(Window);

    /// <summary>
    /// One query's tree as it ran: its depth, the partitions of its busiest node (all of them at depth 0), and the level
    /// timings the nodes reported (level 0 = the coordinator's scan node).
    /// </summary>
    public void Observe(int depth, int busiestNodePartitions, IReadOnlyList<LevelTiming> levels)
    {
        if (levels.Count == 0 || busiestNodePartitions <= 0) return;
        lock (_gate)
        {
            // The busiest node's own work: at depth 0 the coordinator's; in a tree the slowest leaf-level work.
            double work = levels.Max(l => l.WorkMs);
            _scanMsPerPartition.Add(work / busiestNodePartitions);
            for (int i = 0; i + 1 < levels.Count; i++)
                _hopMs.Add(Math.Max(0, levels[i].WallMs - levels[i + 1].WallMs));
            // The residual against the model as it stands (once the scan time is measured; a hop too when the tree had levels).
            bool hopsNeeded = levels.Count > 1;
            if (_scanMsPerPartition.Count >= MinSamples && (!hopsNeeded || _hopMs.Count >= MinSamples))
            {
                double modelled = (hopsNeeded ? _hopMs.Quantile(0.5) * (levels.Count - 1) : 0) + _scanMsPerPartition.Quantile(0.5) * busiestNodePartitions;
                _residualMs.Add(Math.Max(0, levels[0].WallMs - modelled));
            }
        }
    }

    /// <summary>The constants the planner uses now: measured where there are enough samples, else the priors.</summary>
    public PlannerConstants Current(FunctionSettings s)
    {
        lock (_gate)
        {
            bool scanKnown = _scanMsPerPartition.Count >= MinSamples, hopKnown = _hopMs.Count >= MinSamples;
            // A figure measured at 0 (the clock's resolution) would make a tree, or a scan, look free.
            double hop = hopKnown ? Math.Max(0.05, _hopMs.Quantile(0.5)) : s.HopMs;
            double scan = scanKnown ? Math.Max(0.0005, _scanMsPerPartition.Quantile(0.5)) : s.PartitionScanMs;
            double? tail = _residualMs.Count >= MinSamples ? _residualMs.Quantile(0.99) : null;
            return new PlannerConstants(hop, scan, tail, Math.Max(_scanMsPerPartition.Count, _hopMs.Count));
        }
    }

    /// <summary>Forgets every sample (tests).</summary>
    public void Reset()
    {
        lock (_gate) { _scanMsPerPartition.Clear(); _hopMs.Clear(); _residualMs.Clear(); }
    }

    /// <summary>The last <c>capacity</c> values.</summary>
    private sealed class Ring(int capacity)
    {
        private readonly double[] _values = new double[capacity];
        private int _next;
        public int Count { get; private set; }

        public void Add(double v)
        {
            if (!double.IsFinite(v)) return;
            _values[_next] = v;
            _next = (_next + 1) % _values.Length;
            Count = Math.Min(Count + 1, _values.Length);
        }

        public void Clear() { _next = 0; Count = 0; }

        public double Quantile(double q)
        {
            var sorted = _values.AsSpan(0, Count).ToArray();
            Array.Sort(sorted);
            return sorted[Math.Clamp((int)Math.Ceiling(q * sorted.Length) - 1, 0, sorted.Length - 1)];
        }
    }
}
