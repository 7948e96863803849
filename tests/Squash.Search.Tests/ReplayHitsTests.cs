using Squash.Core.Collections;

namespace Squash.Search.Tests;

/// <summary>The calibration's replays count true neighbours as they enter and leave a top-k instead of recounting it.</summary>
public sealed class ReplayHitsTests
{
    [Theory]
    [InlineData(1, 11)]
    [InlineData(10, 12)]
    [InlineData(100, 13)]
    public void TheCountKeptAsCandidatesEnterAndLeaveEqualsARecountAfterEveryOffer(int k, int seed)
    {
        var rng = new Random(seed);
        var ids = Enumerable.Range(0, 5 * k + 50).Select(i => (long)i).OrderBy(_ => rng.Next()).ToArray();
        var truth = ids.Where(_ => rng.NextDouble() < 0.3).ToHashSet();
        var top = new TopK(k);
        int hits = 0, entered = 0;
        foreach (long id in ids)
        {
            // Coarse distances, so that ties (broken by id) come up too.
            float distance = rng.Next(40);
            int before = top.Count;
            hits += RecallCalibrator.HitsChange(top, truth, id, distance);
            if (top.Count > before || top.Items.ToArray().Any(n => n.Id == id)) entered++;
            int recount = top.Items.ToArray().Count(n => truth.Contains(n.Id));
            Assert.True(recount == hits, $"seed {seed}, k {k}: after row {id} the count is {hits}, a recount gives {recount}");
        }
        Assert.True(entered > k, $"seed {seed}: only {entered} candidates entered; no eviction was exercised");
    }

    [Fact]
    public void WorstIsTheItemTheNextEntryEvicts()
    {
        var top = new TopK(3);
        Assert.False(top.IsFull);
        Assert.Throws<InvalidOperationException>(() => top.Worst);
        top.TryAdd(7, 1f);
        top.TryAdd(8, 3f);
        top.TryAdd(9, 2f);
        Assert.True(top.IsFull);
        Assert.Equal(new Neighbor(8, 3f), top.Worst);
        Assert.True(top.TryAdd(10, 0.5f));
        Assert.DoesNotContain(top.Items.ToArray(), n => n.Id == 8);
        Assert.Equal(new Neighbor(9, 2f), top.Worst);
    }
}
