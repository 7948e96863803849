namespace Squash.Search.Tests;

/// <summary>The calibration's one-walk prefixes per centroid factor equal the planner's count for each factor alone, and a cap's count follows the rule written out.</summary>
public sealed class SelectCountsTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void EachCountIsTheSingleFactorCount(int seed)
    {
        var random = new Random(seed);
        for (int trial = 0; trial < 200; trial++)
        {
            int partitions = random.Next(0, 60), k = random.Next(1, 50);
            var distances = Enumerable.Range(0, partitions).Select(_ => (float)(random.NextDouble() * 10)).ToArray();
            // Ties between partitions too, where the walk must stop at the same place as a fresh one.
            for (int p = 1; p < partitions; p += 5) distances[p] = distances[p - 1];
            var sizes = Enumerable.Range(0, partitions).Select(_ => random.Next(0, 20)).ToArray();
            var order = Enumerable.Range(0, partitions).OrderBy(p => distances[p]).ToArray();
            var factors = RecallCalibrator.CentroidFactors;
            var counts = new int[factors.Length];
            SearchEngine.SelectCounts(order, distances, sizes, k, factors, counts);
            for (int g = 0; g < factors.Length; g++)
                Assert.True(Single(order, distances, sizes, k, factors[g]) == counts[g],
                    $"seed {seed}, trial {trial}, factor {factors[g]}: {counts[g]} partitions, alone {Single(order, distances, sizes, k, factors[g])}");
            for (int g = 0; g < factors.Length; g += 17)
                Assert.Equal(counts[g], SearchEngine.SelectCount(order, distances, sizes, new SearchOptions { K = k, CentroidFactor = factors[g] }));
        }
    }

    [Theory]
    [InlineData(5)]
    [InlineData(6)]
    public void ACapStopsTheFactorsWalkButNeverBeforeKVectorsAreHeld(int seed)
    {
        var random = new Random(seed);
        for (int trial = 0; trial < 300; trial++)
        {
            int partitions = random.Next(1, 60), k = random.Next(1, 50), cap = random.Next(1, 10);
            var distances = Enumerable.Range(0, partitions).Select(_ => (float)(random.NextDouble() * 10)).ToArray();
            var sizes = Enumerable.Range(0, partitions).Select(_ => random.Next(0, 20)).ToArray();
            var order = Enumerable.Range(0, partitions).OrderBy(p => distances[p]).ToArray();
            double factor = 1 + random.NextDouble();
            int got = SearchEngine.SelectCount(order, distances, sizes, new SearchOptions { K = k, CentroidFactor = factor, MaxPartitions = cap });
            Assert.True(Single(order, distances, sizes, k, factor, cap) == got,
                $"seed {seed}, trial {trial}, factor {factor}, cap {cap}, k {k}: {got} partitions, written out {Single(order, distances, sizes, k, factor, cap)}");
            // An exact plan scans everything whatever the cap.
            Assert.Equal(partitions, SearchEngine.SelectCount(order, distances, sizes, new SearchOptions { K = k, Exact = true, MaxPartitions = cap }));
        }
    }

    [Fact]
    public void FactorsThatDescendAreRefused()
    {
        var error = Assert.Throws<ArgumentException>(() =>
            SearchEngine.SelectCounts([0, 1], [1f, 2f], [5, 5], 10, [1.5, 1.2], new int[2]));
        Assert.StartsWith("centroid factors must ascend", error.Message);
    }

    /// <summary>
    /// The planner's rule, written out: the nearest partition, then every one within the factor or while fewer than K vectors are held.
    /// With a cap, the factor adds partitions only while fewer than the cap are taken; the K rule still adds past it.
    /// </summary>
    private static int Single(int[] order, float[] distances, int[] sizes, int k, double factor, int cap = int.MaxValue)
    {
        if (order.Length == 0) return 0;
        double limit = distances[order[0]] * factor;
        long held = sizes[order[0]];
        int count = 1;
        while (count < order.Length && ((distances[order[count]] <= limit && count < cap) || held < k)) held += sizes[order[count++]];
        return count;
    }
}
