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
}
