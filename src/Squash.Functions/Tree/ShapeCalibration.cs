using Squash.Functions.Api;

namespace Squash.Functions.Tree;

/// <summary>The planner's time constants: a hop per tree level, the scan time of one partition, and the tail above the typical time.</summary>
/// <param name="FrontMs">The call into the coordinator (not measured by it: Squash__HopMs, the prior).</param>
/// <param name="TailMs">What p99 adds to the typical time (null: not measured yet; the planner then takes 2 × typical).</param>
/// <param name="Samples">How many of this coordinator's recent queries the figures come from (0: the configured priors).</param>
/// <param name="PartitionScanMs">A partition scanned by the coordinator itself (L = 0).</param>
/// <param name="TreePartitionScanMs">A partition scanned by a tree node (its cache and its share of the cores are its own; null: as the coordinator).</param>
/// <param name="MeasuredShapes">The shapes (b, L; the coordinator alone is (1, 0)) this coordinator has run at least
/// <see cref="ShapeCalibration.MinSamples"/> sampled queries on (null or empty: none; every prediction is then a model's guess).</param>
public sealed record PlannerConstants(double HopMs, double PartitionScanMs, double? TailMs, int Samples, double FrontMs, double? TreePartitionScanMs = null,
    IReadOnlySet<(int B, int L)>? MeasuredShapes = null)
{
    /// <summary>Whether this coordinator has measured shape (b, L) on its own queries.</summary>
    public bool Measured(int b, int l) => MeasuredShapes?.Contains(ShapeCalibration.Key(b, l)) == true;

    /// <summary>The configured priors (Squash__HopMs, Squash__PartitionScanMs), before anything is measured.</summary>
    public static PlannerConstants Priors(FunctionSettings s) => new(s.HopMs, s.PartitionScanMs, null, 0, s.HopMs);

    /// <summary>The scan time per partition of a shape of depth <paramref name="depth"/>.</summary>
    public double ScanMs(int depth) => depth == 0 ? PartitionScanMs : TreePartitionScanMs ?? PartitionScanMs;

    /// <summary>The predicted p99 for a typical time: typical + the measured tail, or 3 × typical before it is measured.</summary>
    public double P99(double typicalMs) => typicalMs + (TailMs ?? 2 * typicalMs);
}

/// <summary>
/// The coordinator's running estimate of the planner's constants, from its own invocations. Every single-vector, one-pass
/// query on warm instances reports its tree's level timings (<see cref="LevelTiming"/>); from those come
/// <list type="bullet">
/// <item>the scan time per partition: the busiest node's own work ÷ its partitions;</item>
/// <item>the hop time: how much longer a level's slowest node took than the slowest node one level down, which runs inside it;</item>
/// <item>the residual: the coordinator's tree time − what the model predicts for it with the current constants.</item>
/// </list>
/// Queries that read from the store (cache misses, ranged reads of re-ranked rows) give no scan or hop sample (they time the reads, not the scan), but do
/// give a residual: a tail that reads cause is a real tail. The planner uses the medians of the scan and hop samples and
/// the 99th percentile of the residuals, over the last <see cref="Window"/> samples of each that are younger than
/// <see cref="MaxAge"/>, once there are <see cref="MinSamples"/> of them; else the configured priors. So the figures follow
/// this instance, this index and this load, and a constant the planner stopped measuring (a hop, once it stops choosing
/// trees) returns to its prior after <see cref="MaxAge"/> instead of holding a stale value for ever.
/// </summary>
public sealed class ShapeCalibration(TimeProvider? clock = null)
{
    public const int Window = 256;
    public const int MinSamples = 20;
    public static readonly TimeSpan MaxAge = TimeSpan.FromSeconds(60);

    /// <summary>The coordinator app's estimate (one per process: an instance's own measurements).</summary>
    public static ShapeCalibration Shared { get; } = new();

    private readonly TimeProvider _clock = clock ?? TimeProvider.System;
    private readonly object _gate = new();
    private readonly Ring _scanMsPerPartition = new(Window), _treeScanMsPerPartition = new(Window), _hopMs = new(Window), _residualMs = new(Window);

    /// <summary>Sampled queries per shape run (never forgotten: a shape measured once stays known, as its last figures do).</summary>
    private readonly Dictionary<(int B, int L), int> _runs = [];

    /// <summary>A shape as the calibration names it: at depth 0 the branching is meaningless, so the coordinator alone is (1, 0).</summary>
    public static (int B, int L) Key(int branching, int depth) => depth <= 0 ? (1, 0) : (branching, depth);

    /// <summary>
    /// One query's tree as it ran: its shape (b, L), the partitions of its busiest node (all of them at depth 0), whether
    /// any were read from the store, and the level timings the nodes reported (level 0 = the coordinator's scan node).
    /// </summary>
    public void Observe((int Branching, int Depth) shape, int busiestNodePartitions, bool readFromStore, IReadOnlyList<LevelTiming> levels)
    {
        if (levels.Count == 0 || busiestNodePartitions <= 0) return;
        long now = _clock.GetTimestamp();
        lock (_gate)
        {
            var key = Key(shape.Branching, shape.Depth);
            _runs[key] = _runs.GetValueOrDefault(key) + 1;
            bool tree = levels.Count > 1;
            var scanRing = tree ? _treeScanMsPerPartition : _scanMsPerPartition;
            // The residual against the model as it stands (once the scan time is measured; a hop too when the tree had levels).
            if (Recent(scanRing, 0.5, now) is { } scan && (!tree || Recent(_hopMs, 0.5, now) is not null))
            {
                double modelled = (tree ? Recent(_hopMs, 0.5, now)!.Value * (levels.Count - 1) : 0) + scan * busiestNodePartitions;
                _residualMs.Add(Math.Max(0, levels[0].WallMs - modelled), now);
            }
            // The hop is the wall time between levels: a child's reads are inside its own wall time, so every tree gives one.
            for (int i = 0; i + 1 < levels.Count; i++)
                _hopMs.Add(Math.Max(0, levels[i].WallMs - levels[i + 1].WallMs), now);
            if (readFromStore) return;
            // The busiest node's own work: at depth 0 the coordinator's; in a tree the slowest node's work.
            scanRing.Add(levels.Max(l => l.WorkMs) / busiestNodePartitions, now);
        }
    }

    /// <summary>The constants the planner uses now: measured where there are enough recent samples, else the priors.</summary>
    public PlannerConstants Current(FunctionSettings s)
    {
        long now = _clock.GetTimestamp();
        lock (_gate)
        {
            // A figure measured at 0 (the clock's resolution) would make a tree, or a scan, look free.
            double? alone = Recent(_scanMsPerPartition, 0.5, now), inTree = Recent(_treeScanMsPerPartition, 0.5, now);
            double hop = Recent(_hopMs, 0.5, now) is { } h ? Math.Max(0.05, h) : s.HopMs;
            // Unmeasured, the coordinator's scan is the prior (so that the planner tries it, and measures it); a tree node's
            // is the coordinator's.
            double scan = Math.Max(0.0005, alone ?? s.PartitionScanMs);
            double? treeScan = inTree is { } t ? Math.Max(0.0005, t) : null;
            double? tail = Recent(_residualMs, 0.99, now);
            int samples = _scanMsPerPartition.Count + _treeScanMsPerPartition.Count;
            var measured = _runs.Where(r => r.Value >= MinSamples).Select(r => r.Key).ToHashSet();
            return new PlannerConstants(hop, scan, tail, samples, s.HopMs, treeScan, measured);
        }
    }

    /// <summary>
    /// The q-quantile of the samples younger than <see cref="MaxAge"/> when there are enough of them; else of the newest
    /// <see cref="MinSamples"/> (the last known figure holds until new samples replace it); null with fewer than that.
    /// </summary>
    private double? Recent(Ring ring, double q, long now) =>
        ring.Quantile(q, now - (long)(MaxAge.TotalSeconds * _clock.TimestampFrequency)) ?? ring.NewestQuantile(q, MinSamples);

    /// <summary>The last <c>capacity</c> values with the time each was added.</summary>
    private sealed class Ring(int capacity)
    {
        private readonly (double Value, long At)[] _values = new (double, long)[capacity];
        private int _next, _count;

        public void Add(double v, long at)
        {
            if (!double.IsFinite(v)) return;
            _values[_next] = (v, at);
            _next = (_next + 1) % _values.Length;
            _count = Math.Min(_count + 1, _values.Length);
        }

        public int Count => _count;

        /// <summary>The q-quantile of the newest <paramref name="n"/> values (null: fewer than n).</summary>
        public double? NewestQuantile(double q, int n)
        {
            if (_count < n) return null;
            var newest = Enumerable.Range(1, n).Select(i => _values[((_next - i) % _values.Length + _values.Length) % _values.Length].Value).ToArray();
            Array.Sort(newest);
            return newest[Math.Clamp((int)Math.Ceiling(q * n) - 1, 0, n - 1)];
        }

        /// <summary>The q-quantile of the values added since <paramref name="since"/> (null: fewer than <see cref="MinSamples"/>).</summary>
        public double? Quantile(double q, long since)
        {
            var recent = _values.AsSpan(0, _count).ToArray().Where(x => x.At >= since).Select(x => x.Value).ToArray();
            if (recent.Length < MinSamples) return null;
            Array.Sort(recent);
            return recent[Math.Clamp((int)Math.Ceiling(q * recent.Length) - 1, 0, recent.Length - 1)];
        }
    }
}
