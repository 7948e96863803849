using System.Text.Json;
using Squash.Core;
using Squash.Index.Build;
using Squash.Search.Filters;
using Squash.Search.Tests.Filters;
using Xunit.Abstractions;

namespace Squash.Search.Tests;

/// <summary>
/// The <c>certified</c> flag: a certified answer equals brute force (ids and distances, ties to float precision),
/// over random data, index options, queries, k and knobs; exact answers are always certified; and the flag is not
/// vacuous — it holds for most answers of an easy case and is withheld where the answer is wrong.
/// </summary>
public class CertifiedTests(ITestOutputHelper output)
{
    private static readonly int[] DimChoices = [3, 7, 16, 33];
    private static readonly double[] BitChoices = [1, 2, 4, 8];
    private static readonly double[] EnergyChoices = [0.5, 0.9, 1];
    private static readonly double[] HammingChoices = [100, 100, 100, 60, 20];

    /// <summary>Brute force in the user's metric, filtered; every row's distance too (for ties).</summary>
    private static ((long Id, double Distance)[] Top, double[] ById) BruteForce(float[] data, int n, int dims, float[] q, int k, Metric metric, bool[]? match)
    {
        var all = TestData.BruteForce(data, n, dims, q, n, metric);
        var byId = new double[n];
        foreach (var (id, d) in all) byId[id] = d;
        return (all.Where(e => match is null || match[e.Id]).Take(k).ToArray(), byId);
    }

    /// <summary>Null when the answer equals brute force (a different id at a rank only where the distances tie); else what differs.</summary>
    private static string? Difference(SearchResult got, (long Id, double Distance)[] expected, double[] byId)
    {
        if (got.Ids.Length != expected.Length) return $"{got.Ids.Length} results, brute force has {expected.Length}";
        if (got.Ids.Distinct().Count() != got.Ids.Length) return "duplicate ids";
        for (int i = 0; i < expected.Length; i++)
        {
            double tol = 1e-4 * Math.Max(1, Math.Abs(expected[i].Distance));
            if (Math.Abs(got.Distances[i] - expected[i].Distance) > tol)
                return $"rank {i}: distance {got.Distances[i]} (id {got.Ids[i]}), brute force {expected[i].Distance} (id {expected[i].Id})";
            if (got.Ids[i] != expected[i].Id && Math.Abs(byId[got.Ids[i]] - expected[i].Distance) > tol)
                return $"rank {i}: id {got.Ids[i]} at {byId[got.Ids[i]]}, brute force id {expected[i].Id} at {expected[i].Distance}";
        }
        return null;
    }

    [Fact]
    public void CertifiedAnswersEqualBruteForce()
    {
        const int seeds = 40, queriesPerIndex = 25;
        int answers = 0, certified = 0, wrong = 0, certifiedFiltered = 0, certifiedPruned = 0;
        for (int seed = 1; seed <= seeds; seed++)
        {
            var rng = new Random(seed);
            int dims = DimChoices[rng.Next(DimChoices.Length)];
            int n = 150 + rng.Next(1200);
            var metric = (Metric)rng.Next(3);
            var data = TestData.Clustered(n, dims, clusters: 1 + rng.Next(10), seed: 1000 + seed);
            // Some exact duplicates, so that ties at the k-th distance occur.
            for (int i = 0; i < n / 20; i++)
                Array.Copy(data, rng.Next(n) * dims, data, rng.Next(n) * dims, dims);
            bool attributes = rng.Next(3) == 0;
            var table = attributes ? FilterTestData.Table(n, seed, out _) : null;
            var build = new IndexBuildOptions
            {
                Metric = metric, Partitions = 1 + rng.Next(Math.Min(16, n / 30)), BitsPerDimension = BitChoices[rng.Next(BitChoices.Length)],
                EnergyKept = EnergyChoices[rng.Next(EnergyChoices.Length)], Seed = seed, Attributes = table,
            };
            using var idx = new TestData.TempIndex(data, n, dims, build);
            for (int qi = 0; qi < queriesPerIndex; qi++)
            {
                // Near a stored vector (sometimes on it), or anywhere in a wide box.
                var q = new float[dims];
                int near = rng.Next(n);
                double noise = new[] { 0, 0.05, 0.5, 3 }[rng.Next(4)];
                for (int j = 0; j < dims; j++)
                    q[j] = rng.Next(6) == 0 ? (float)(rng.NextDouble() * 20 - 10) : data[near * dims + j] + (float)(TestData.Gaussian(rng) * noise);
                if (q.All(v => v == 0)) q[0] = 1;
                string? json = attributes && rng.Next(2) == 0 ? FilterTestData.Nested(rng, 2) : null;
                bool[]? match = null;
                CompiledFilter? filter = null;
                if (json is not null)
                {
                    using var doc = JsonDocument.Parse(json);
                    match = new bool[n];
                    for (int r = 0; r < n; r++) match[r] = FilterTestData.Reference(doc.RootElement, table!, r);
                    filter = idx.Index.Filters.Compile(json);
                }
                var options = new SearchOptions
                {
                    K = 1 + rng.Next(25), CentroidFactor = 1 + rng.NextDouble() * rng.NextDouble() * 2, RerankFactor = 1 + rng.Next(3),
                    HammingKeepPercent = HammingChoices[rng.Next(HammingChoices.Length)], HammingBits = 1 + rng.Next(64),
                    Exact = rng.Next(10) == 0, Filter = filter,
                    FilterStrategy = filter is null ? FilterStrategy.Auto : (FilterStrategy)rng.Next(3),
                };
                var got = idx.Engine.Search(q, options);
                var (expected, byId) = BruteForce(data, n, dims, q, options.K, metric, match);
                var difference = Difference(got, expected, byId);
                answers++;
                if (difference is not null) wrong++;
                string where = $"seed {seed} query {qi} (n {n}, dims {dims}, {metric}, {build.Partitions} partitions, {build.BitsPerDimension} bits, energy {build.EnergyKept}; " +
                    $"k {options.K}, CF {options.CentroidFactor:F3}, R {options.RerankFactor}, H {options.HammingKeepPercent}, exact {options.Exact}, filter {json ?? "none"}, {got.Stats.Strategy})";
                if (options.Exact) Assert.True(got.Stats.Certified, $"an exact answer is not certified: {where}");
                if (!got.Stats.Certified) continue;
                certified++;
                if (filter is not null) certifiedFiltered++;
                if (options.HammingKeepPercent < 100 && !options.Exact) certifiedPruned++;
                Assert.True(difference is null, $"certified but not exact: {difference}; {where}");
            }
        }
        output.WriteLine($"{answers} answers: {certified} certified ({certifiedFiltered} filtered, {certifiedPruned} with the Hamming prune on), {wrong} differ from brute force");
        // Both kinds occur, so the property was tested where it could fail.
        Assert.True(certified >= answers / 10, $"only {certified} of {answers} answers certified");
        Assert.True(wrong > 0, "no answer differed from brute force: the knobs never made the search approximate");
        Assert.True(certifiedFiltered > 0, "no filtered answer was certified");
    }

    [Fact]
    public void MostAnswersOfAnEasyCaseAreCertified()
    {
        const int n = 3000, dims = 16, k = 10, queries = 100;
        var data = TestData.Clustered(n, dims, clusters: 12, seed: 8);
        using var idx = new TestData.TempIndex(data, n, dims, new IndexBuildOptions { Partitions = 12, EnergyKept = 1, Seed = 5 });
        var rng = new Random(31);
        int certified = 0, certifiedByDefault = 0;
        for (int qi = 0; qi < queries; qi++)
        {
            var q = new float[dims];
            int near = rng.Next(n);
            for (int j = 0; j < dims; j++) q[j] = data[near * dims + j] + (float)(TestData.Gaussian(rng) * 0.05);
            // Every partition planned, so the engine's own bound skips the far ones; R 10 leaves few rows to the cap.
            var generous = idx.Engine.Search(q, new SearchOptions { K = k, CentroidFactor = SearchOptions.MaxCentroidFactor, RerankFactor = 10 });
            if (generous.Stats.Certified) certified++;
            if (idx.Engine.Search(q, new SearchOptions { K = k }).Stats.Certified) certifiedByDefault++;
        }
        output.WriteLine($"certified: {certified} of {queries} with every partition planned and R 10; {certifiedByDefault} with the defaults");
        Assert.True(certified >= queries * 0.9, $"only {certified} of {queries} certified with every partition planned and R 10");
    }

    [Theory]
    [InlineData(Metric.L2, false)]
    [InlineData(Metric.Cosine, false)]
    [InlineData(Metric.InnerProduct, true)]
    [InlineData(Metric.L2, true)]
    public void ExactAnswersAreCertified(Metric metric, bool filtered)
    {
        const int n = 800, dims = 9;
        var data = TestData.Clustered(n, dims, clusters: 5, seed: 3);
        var table = filtered ? FilterTestData.Table(n, 4, out _) : null;
        using var idx = new TestData.TempIndex(data, n, dims, new IndexBuildOptions { Metric = metric, Partitions = 6, Seed = 2, Attributes = table });
        var filter = filtered ? idx.Index.Filters.Compile("{\"label\":{\"$lt\":3}}") : null;
        for (int qi = 0; qi < 20; qi++)
        {
            var got = idx.Engine.Search(data.AsSpan(qi * 31 * dims, dims), new SearchOptions { K = 15, Exact = true, Filter = filter });
            Assert.True(got.Stats.Certified, $"{metric} query {qi}");
        }
    }

    [Fact]
    public void AnAnswerThatMissedANeighbourIsNotCertified()
    {
        // One partition visited, one re-rank candidate per result, a Hamming prune: wrong answers must all be uncertified.
        const int n = 2000, dims = 16, k = 10;
        var data = TestData.Clustered(n, dims, clusters: 4, seed: 12);
        using var idx = new TestData.TempIndex(data, n, dims, new IndexBuildOptions { Partitions = 16, BitsPerDimension = 1, Seed = 9 });
        var rng = new Random(5);
        int wrong = 0;
        for (int qi = 0; qi < 50; qi++)
        {
            var q = new float[dims];
            for (int j = 0; j < dims; j++) q[j] = (float)(TestData.Gaussian(rng) * 3);
            var got = idx.Engine.Search(q, new SearchOptions { K = k, CentroidFactor = 1, RerankFactor = 1, HammingKeepPercent = 30 });
            var (expected, byId) = BruteForce(data, n, dims, q, k, Metric.L2, null);
            if (Difference(got, expected, byId) is null) continue;
            wrong++;
            Assert.False(got.Stats.Certified, $"query {qi} is certified but differs from brute force");
        }
        Assert.True(wrong > 0, "every answer was exact: the case does not exercise the flag");
    }
}
