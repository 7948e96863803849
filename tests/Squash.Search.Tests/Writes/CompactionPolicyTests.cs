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
        // Forced: 3 (past the whole base) and 6 (a split); due: 4 and 7 (0.9, lower number first on the tie), 5, 2.
        Assert.Equal([3, 4, 6, 7], LogIngest.ChooseRewrites(pressure, 2));
        Assert.Equal([3, 6], LogIngest.ChooseRewrites(pressure, 0));
        Assert.Equal([2, 3, 4, 5, 6, 7], LogIngest.ChooseRewrites(pressure, 100));
        Assert.Equal(8, LogIngest.RewriteBudget(10));
        Assert.Equal(31, LogIngest.RewriteBudget(1000));
    }

    /// <summary>
    /// Uniform writes (each run adds a row or two to every partition and replaces as many base rows) bring every partition to
    /// half its base within a few runs of each other: no run may then rewrite more than its budget, and none may let a
    /// partition reach the forced share, i.e. the budget keeps up.
    /// </summary>
    [Theory]
    [InlineData(1000, 1000, 1)]
    [InlineData(200, 300, 2)]
    [InlineData(64, 50, 3)]
    public void UniformWritesSpreadTheirRewritesWithinTheBudget(int partitions, int baseRows, int seed)
    {
        var rng = new Random(seed);
        var appended = new int[partitions];
        var masked = new int[partitions];
        int budget = LogIngest.RewriteBudget(partitions), runs = 6 * baseRows, rewrites = 0, busiest = 0;
        for (int run = 0; run < runs; run++)
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
            var chosen = LogIngest.ChooseRewrites(pressure, budget);
            Assert.True(chosen.Length <= budget, $"seed {seed}, run {run}: {chosen.Length} rewrites, budget {budget}");
            foreach (int p in chosen) { appended[p] = 0; masked[p] = 0; }
            rewrites += chosen.Length;
            busiest = Math.Max(busiest, chosen.Length);
        }
        // Every partition was rewritten several times over the runs, i.e. the budget did not starve them.
        Assert.True(rewrites >= 3 * partitions, $"seed {seed}: {rewrites} rewrites of {partitions} partitions in {runs} runs");
        Assert.Equal(budget, busiest);
    }
}
