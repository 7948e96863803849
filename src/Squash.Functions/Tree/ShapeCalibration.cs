using Squash.Functions.Api;

namespace Squash.Functions.Tree;

/// <summary>The planner's time constants: a hop per tree level, the scan time of one partition, and the tail above the typical time.</summary>
/// <param name="FrontMs">The call into the coordinator (not measured by it: Squash__HopMs, the prior).</param>
/// <param name="TailMs">What p99 adds to the typical time (null: not measured yet; the planner then takes 2 × typical).</param>
/// <param name="Samples">How many of this coordinator's recent queries the figures come from (0: the configured priors).</param>
public sealed record PlannerConstants(double HopMs, double PartitionScanMs, double? TailMs, int Samples, double FrontMs)
{
    /// <summary>The configured priors (Squash__HopMs, Squash__PartitionScanMs), before anything is measured.</summary>
    public static PlannerConstants Priors(FunctionSettings s) => new(s.HopMs, s.PartitionScanMs, null, 0, s.HopMs);

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
    private readonly Ring _scanMsPerPartition = new(Window), _hopMs = new(Window), _residualMs = new(Window);

    /// <summary>
    /// One query's tree as it ran: the partitions of its busiest node (all of them at depth 0), whether any were read from
    /// the store, and the level timings the nodes reported (level 0 = the coordinator's scan node).
    /// </summary>
    public void Observe(int busiestNodePartitions, bool readFromStore, IReadOnlyList<LevelTiming> levels)
    {
        if (levels.Count == 0 || busiestNodePartitions <= 0) return;
        long now = _clock.GetTimestamp();
        lock (_gate)
        {
            // The residual against the model as it stands (once the scan time is measured; a hop too when the tree had levels).
            bool hopsNeeded = levels.Count > 1;
            if (Fresh(_scanMsPerPartition, now) is { } scan && (!hopsNeeded || Fresh(_hopMs, now) is not null))
            {
                double modelled = (hopsNeeded ? Fresh(_hopMs, now)!.Value * (levels.Count - 1) : 0) + scan * busiestNodePartitions;
                _residualMs.Add(Math.Max(0, levels[0].WallMs - modelled), now);
            }
            if (readFromStore) return;
            // The busiest node's own work: at depth 0 the coordinator's; in a tree the slowest node's work.
            _scanMsPerPartition.Add(levels.Max(l => l.WorkMs) / busiestNodePartitions, now);
            for (int i = 0; i + 1 < levels.Count; i++)
                _hopMs.Add(Math.Max(0, levels[i].WallMs - levels[i + 1].WallMs), now);
        }
    }

    /// <summary>The constants the planner uses now: measured where there are enough recent samples, else the priors.</summary>
    public PlannerConstants Current(FunctionSettings s)
    {
        long now = _clock.GetTimestamp();
        lock (_gate)
        {
            // A figure measured at 0 (the clock's resolution) would make a tree, or a scan, look free.
            double hop = Fresh(_hopMs, now) is { } h ? Math.Max(0.05, h) : s.HopMs;
            double scan = Fresh(_scanMsPerPartition, now) is { } p ? Math.Max(0.0005, p) : s.PartitionScanMs;
            double? tail = _residualMs.Quantile(0.99, MinAgeTimestamp(now));
            int samples = Math.Max(_scanMsPerPartition.CountSince(MinAgeTimestamp(now)), _hopMs.CountSince(MinAgeTimestamp(now)));
            return new PlannerConstants(hop, scan, tail, samples, s.HopMs);
        }
    }

    private double? Fresh(Ring ring, long now) => ring.Quantile(0.5, MinAgeTimestamp(now));

    private long MinAgeTimestamp(long now) => now - (long)(MaxAge.TotalSeconds * _clock.TimestampFrequency);

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

        public int CountSince(long since) => _values.AsSpan(0, _count).ToArray().Count(x => x.At >= since);

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
