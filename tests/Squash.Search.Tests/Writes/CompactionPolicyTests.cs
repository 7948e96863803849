using Squash.Index.Model;
using Squash.Search.Writes;

namespace Squash.Search.Tests.Writes;

/// <summary>
/// Which appended segments an ingest run merges (<see cref="LogIngest.CompactFrom"/>): never more than the limit, the large
/// old segments kept while small new ones merge, and over many runs each row copied a few times, not once per run.
/// </summary>
public class CompactionPolicyTests
{
    [Theory]
    [InlineData(new[] { 1, 1, 1 }, 1, 3)]                      // within the limit: no merge
    [InlineData(new[] { 1, 1, 1, 1, 1, 1, 1 }, 1, 7)]          // exactly the limit with the new one
    [InlineData(new[] { 1, 1, 1, 1, 1, 1, 1, 1 }, 1, 0)]       // eight equal ones and the new: all merge
    [InlineData(new[] { 9, 1, 1, 1, 1, 1, 1, 1 }, 1, 0)]       // 9 ≤ 2 × the 8 merged: joins them
    [InlineData(new[] { 20, 1, 1, 1, 1, 1, 1, 1 }, 1, 1)]      // the large old one stays
    [InlineData(new[] { 100, 1, 1, 1, 1, 1, 1, 1 }, 1, 1)]
    [InlineData(new[] { 100, 50, 40, 1, 1, 1, 1, 1 }, 1, 3)]   // 5 + 1 rows merged; 40 > 2 × 6 stays
    [InlineData(new[] { 9, 8, 7, 6, 5, 4, 3, 2 }, 1, 0)]       // a staircase merges whole
    [InlineData(new[] { 1, 1, 1, 1, 1, 1, 1, 1 }, 0, 8)]       // no new rows, no new segment: nothing to do
    public void MergesTheNewestSegmentsItMust(int[] segments, int added, int expected) =>
        Assert.Equal(expected, LogIngest.CompactFrom(segments, added, 8));

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(1, 3, 2)]
    [InlineData(0, 20, 3)]
    public void ManyRunsStayWithinTheLimitAndCopyEachRowAFewTimes(int least, int most, int seed)
    {
        const int limit = LogIngest.MaxAppendedSegments;
        var rng = new Random(seed);
        // Each segment as its rows' copy counts.
        var segments = new List<List<int>>();
        int runs = 1_000, merges = 0;
        long rows = 0, copies = 0;
        for (int run = 0; run < runs; run++)
        {
            int added = rng.Next(least, most + 1);
            rows += added;
            int from = LogIngest.CompactFrom(segments.Select(s => s.Count).ToArray(), added, limit);
            Assert.InRange(from, 0, segments.Count);
            if (from < segments.Count)
            {
                merges++;
                var merged = segments.Skip(from).SelectMany(s => s.Select(c => c + 1)).ToList();
                copies += merged.Count;
                merged.AddRange(Enumerable.Repeat(0, added));
                segments.RemoveRange(from, segments.Count - from);
                segments.Add(merged);
            }
            else if (added > 0) segments.Add([.. Enumerable.Repeat(0, added)]);
            Assert.True(segments.Count <= limit, $"run {run}: {segments.Count} segments");
        }
        int maxCopies = segments.SelectMany(s => s).Max();
        double meanCopies = copies / (double)rows;
        // Merging every appended segment at the limit would copy each row once every few runs (dozens of times here); the
        // tiers keep it near log(rows), and merge in under a quarter of the runs.
        Assert.True(meanCopies <= 7, $"a row was copied {meanCopies:F2} times on average");
        Assert.True(maxCopies <= 16, $"a row was copied {maxCopies} times");
        Assert.True(merges <= runs / 4, $"{merges} merges in {runs} runs");
    }

    [Fact]
    public void ForcedRewritesIgnoreTheBudgetAndDueOnesTakeItFurthestFirst()
    {
        double[] pressure = [0, 0.5, 0.51, 1.01, 0.9, 0.7, double.PositiveInfinity, 0.9, 0.2];
        var half = Enumerable.Repeat(LogIngest.RewriteShare, pressure.Length).ToArray();
        // Forced: 3 (past the whole base) and 6 (a split); due: 4 and 7 (0.9, lower number first on the tie), 5, 2.
        Assert.Equal([3, 4, 6, 7], LogIngest.ChooseRewrites(pressure, half, 2));
        Assert.Equal([3, 6], LogIngest.ChooseRewrites(pressure, half, 0));
        Assert.Equal([2, 3, 4, 5, 6, 7], LogIngest.ChooseRewrites(pressure, half, 100));
        Assert.Equal(8, LogIngest.RewriteBudget(10));
        Assert.Equal(31, LogIngest.RewriteBudget(1000));
    }

    [Fact]
    public void EachPartitionIsDueAtItsOwnThresholdAndTheFurthestPastItGoFirst()
    {
        double[] pressure = [0.3, 0.6, 0.7, 0.45, 0.2];
        double[] thresholds = [0.25, 0.7, 0.5, 0.3, 0.25];
        // Due: 0 (0.3 past 0.25: 1.2×), 2 (1.4×), 3 (1.5×); not 1 (0.6 < 0.7) nor 4 (0.2 < 0.25).
        Assert.Equal([0, 2, 3], LogIngest.ChooseRewrites(pressure, thresholds, 100));
        Assert.Equal([2, 3], LogIngest.ChooseRewrites(pressure, thresholds, 2));
        Assert.Throws<ArgumentException>(() => LogIngest.ChooseRewrites(pressure, thresholds[..4], 2));
    }

    /// <summary>
    /// The thresholds of a built index's partitions spread over [0.25, 0.75) of the base with a mean of about half, each is the
    /// same whenever it is computed, and a partition's changes when its base codes move (a rewrite writes them anew).
    /// </summary>
    [Fact]
    public void RewriteThresholdsSpreadAroundHalfAndMoveWithTheBase()
    {
        const string built = "v20261205-100000000-0123456789ab";
        var thresholds = Enumerable.Range(0, 1000).Select(p => LogIngest.RewriteThreshold(new SegmentRef($"p{p:D5}.codes", 4096), built, p)).ToArray();
        Assert.All(thresholds, t => Assert.InRange(t, 0.25, 0.75));
        Assert.InRange(thresholds.Average(), 0.48, 0.52);
        // Every tenth of the range holds some (1,000 uniform draws: ~100 each).
        for (int tenth = 0; tenth < 10; tenth++)
            Assert.InRange(thresholds.Count(t => (int)((t - 0.25) / 0.05) == tenth), 60, 140);
        // A segment without a version lives in the manifest's own folder: named with it or without, one threshold.
        var own = new SegmentRef("p00007.codes", 4096);
        Assert.Equal(LogIngest.RewriteThreshold(own, built, 7), LogIngest.RewriteThreshold(own with { Version = built }, "v20261205-110000000-0123456789ab", 7));
        var rewritten = new SegmentRef("index.pack", 4096) { Offset = 81920, Version = "v20261205-110000000-0123456789ab" };
        Assert.NotEqual(LogIngest.RewriteThreshold(own, built, 7), LogIngest.RewriteThreshold(rewritten, built, 7));
    }

    /// <summary>
    /// Uniform writes (each run adds a row or two to every partition and replaces as many base rows) bring every partition to
    /// its share of its base at a steady rate: no run may then rewrite more than its budget, and none may let a partition reach
    /// the forced share, i.e. the budget keeps up, with one share for all (the busiest run then takes the whole budget: every
    /// partition falls due within a few runs of the others) and with shares spread as <see cref="LogIngest.RewriteThreshold"/>
    /// spreads them (drawn anew after each rewrite, as a rewrite moves a partition's base codes).
    /// </summary>
    [Theory]
    [InlineData(1000, 1000, 1, false)]
    [InlineData(200, 300, 2, false)]
    [InlineData(64, 50, 3, false)]
    [InlineData(1000, 1000, 1, true)]
    [InlineData(200, 300, 2, true)]
    [InlineData(64, 50, 3, true)]
    public void UniformWritesSpreadTheirRewritesWithinTheBudget(int partitions, int baseRows, int seed, bool spread)
    {
        var perRun = SimulateUniformWrites(partitions, baseRows, seed, spread);
        int budget = LogIngest.RewriteBudget(partitions);
        Assert.All(perRun, n => Assert.True(n <= budget, $"seed {seed}: {n} rewrites in a run, budget {budget}"));
        // Every partition was rewritten several times over the runs, i.e. the budget did not starve them.
        Assert.True(perRun.Sum() >= 3 * partitions, $"seed {seed}: {perRun.Sum()} rewrites of {partitions} partitions in {perRun.Length} runs");
        if (!spread) Assert.Equal(budget, perRun.Max());
    }

    /// <summary>
    /// Past the first cycle, the busiest stretch of runs (a twentieth of the runs a partition takes to change whole) rewrites
    /// over 3 times the mean for such a stretch with one share for all (waves), and at most twice with spread shares.
    /// </summary>
    [Theory]
    [InlineData(1000, 1000, 11)]
    [InlineData(400, 1000, 12)]
    [InlineData(200, 300, 13)]
    public void SpreadThresholdsTurnWavesOfRewritesIntoASteadyRate(int partitions, int baseRows, int seed)
    {
        double Peak(int[] perRun)
        {
            int window = baseRows / 20;
            var steady = perRun[baseRows..];
            double mean = steady.Average() * window;
            return Enumerable.Range(0, steady.Length - window).Max(i => steady.AsSpan(i, window).ToArray().Sum()) / mean;
        }
        double waves = Peak(SimulateUniformWrites(partitions, baseRows, seed, spread: false));
        double spread = Peak(SimulateUniformWrites(partitions, baseRows, seed, spread: true));
        Assert.True(waves > 3, $"seed {seed}: one share for all peaked at {waves:F2} × the mean");
        Assert.True(spread <= 2, $"seed {seed}: spread shares peaked at {spread:F2} × the mean");
    }

    /// <summary>Rewrites per run over 6 × <paramref name="baseRows"/> runs of uniform writes (see the tests above).</summary>
    private static int[] SimulateUniformWrites(int partitions, int baseRows, int seed, bool spread)
    {
        var rng = new Random(seed);
        var appended = new int[partitions];
        var masked = new int[partitions];
        double Draw() => spread ? LogIngest.RewriteShare * (0.5 + rng.NextDouble()) : LogIngest.RewriteShare;
        var thresholds = Enumerable.Range(0, partitions).Select(_ => Draw()).ToArray();
        int budget = LogIngest.RewriteBudget(partitions);
        var perRun = new int[6 * baseRows];
        for (int run = 0; run < perRun.Length; run++)
        {
            var pressure = new double[partitions];
            for (int p = 0; p < partitions; p++)
            {
                int added = rng.Next(1, 3);
                appended[p] += added;
                masked[p] = Math.Min(baseRows, masked[p] + added);
                pressure[p] = (double)Math.Max(appended[p], masked[p]) / baseRows;
                Assert.True(pressure[p] <= LogIngest.ForcedRewriteShare, $"seed {seed}, run {run}: partition {p} reached {pressure[p]:F2} of its base");
            }
            var chosen = LogIngest.ChooseRewrites(pressure, thresholds, budget);
            foreach (int p in chosen) { appended[p] = 0; masked[p] = 0; thresholds[p] = Draw(); }
            perRun[run] = chosen.Length;
        }
        return perRun;
    }
}
