using System.Globalization;
using System.Text;
using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.Search.Filters;
using Xunit.Abstractions;

namespace Squash.Search.Tests;

/// <summary>
/// Recall targets for filtered queries: the filtered calibration's replay of a plan equals what the engine returns for
/// it with the same filters, and held-out queries with filters of each calibrated kind (a class label other than the
/// query's own, ranges independent of the vectors at 10 % and 1 %) reach their target.
/// </summary>
public class FilteredRecallTargetTests(ITestOutputHelper output)
{
    private const int Dims = 24, Base = 6000, Held = 400, K = 10, Classes = 10, URange = 100_000;

    /// <summary>Clustered vectors; "label" is the nearest of ten fixed base rows (so it follows the vectors), "u" is independent.</summary>
    private static (float[] Base, float[] Queries, int[] Labels, AttributeTable Table) Data(int seed)
    {
        var all = TestData.Clustered(Base + Held, Dims, clusters: 25, seed: seed);
        var labels = new int[Base + Held];
        for (int i = 0; i < labels.Length; i++)
        {
            double best = double.PositiveInfinity;
            for (int c = 0; c < Classes; c++)
            {
                double d = 0;
                for (int j = 0; j < Dims; j++) { double x = all[i * Dims + j] - all[c * 97 * Dims + j]; d += x * x; }
                if (d < best) { best = d; labels[i] = c; }
            }
        }
        var rng = new Random(seed ^ 0x7ab1e);
        var jsonl = new StringBuilder();
        for (int i = 0; i < Base; i++)
            jsonl.Append(CultureInfo.InvariantCulture, $"{{\"attributes\":{{\"label\":{labels[i]},\"u\":{rng.Next(URange)}}}}}\n");
        var table = AttributeReader.ReadJsonLines(new StringReader(jsonl.ToString()), "labels.jsonl");
        return (all[..(Base * Dims)], all[(Base * Dims)..], labels, table);
    }

    private static double Recall(SearchEngine engine, ReadOnlySpan<float> q, CompiledFilter filter, SearchOptions options, int k = K)
    {
        var exact = engine.Search(q, new SearchOptions { K = k, Exact = true, Filter = filter }).Ids.ToHashSet();
        if (exact.Count == 0) return 1;
        return engine.Search(q, options with { K = k, Filter = filter }).Ids.Count(exact.Contains) / (double)exact.Count;
    }

    [Fact]
    public void ReplayedFilteredRecallEqualsTheEnginesForGridPlans()
    {
        const int seed = 13;
        var (data, queries, _, table) = Data(seed);
        var calibration = new CalibrationQueries(queries[..(120 * Dims)], 120, Dims, null, "queries");
        using var idx = new TestData.TempIndex(data, Base, Dims, new IndexBuildOptions { Partitions = 40, Seed = seed, Attributes = table }, calibrate: true, calibration);
        var families = FilteredRecallCalibrator.Measure(idx.Index, calibration, K);
        Assert.Equal(["range 10%", "range 1%", "other value"], families.Select(f => f.Name));
        Assert.Equal((1.0, (double?)1.0), FilteredRecallCalibrator.Column(RecallCalibrator.CentroidFactors.Length));
        AssertReplayEqualsEngine(idx, calibration, families, seed);
        var bands = idx.Index.Manifest.Calibration!.Filtered;
        Assert.NotNull(bands);
        // 10 % ranges and other-label equality (about 9 %) share the top band; 1 % ranges have their own.
        Assert.Equal([(0.05, 1.0), (0.005, 0.05)], bands!.Select(b => (b.MinSelectivity, b.MaxSelectivity)).Distinct().OrderByDescending(b => b.MinSelectivity));
        // The top band splits by anchor ratio: other-label queries (matches away from the query) get a band of their own, and
        // the band below the split keeps the frontier of every query in the selectivity band.
        var top = bands!.Where(b => b.MinSelectivity == 0.05).OrderBy(b => b.MinAnchorRatio).ToArray();
        Assert.Equal([(0.0, FilteredRecallCalibrator.SplitAnchorRatio), (FilteredRecallCalibrator.SplitAnchorRatio, (double?)null)],
            top.Select(b => (b.MinAnchorRatio!.Value, b.MaxAnchorRatio)));
        Assert.Equal(["other value"], top[1].Families.Select(f => f[..f.IndexOf(':')]));
        Assert.Contains(top[0].Families, f => f.StartsWith("other value", StringComparison.Ordinal));
    }

    /// <summary>
    /// The user's own filters (<see cref="CalibrationQueries.Filters"/>, `build --calibration-filters`): each given family is
    /// measured as given, at the queries it filters, instead of the families drawn from the attributes, and its replay
    /// equals the engine's recall; the bands name only the given families.
    /// </summary>
    [Fact]
    public void GivenFilterFamiliesAreMeasuredInsteadOfDrawnOnes()
    {
        const int seed = 29, queries = 120;
        var (data, held, labels, table) = Data(seed);
        // Every third query has no filter in the first family; the second family filters each query to the next label.
        var own = Enumerable.Range(0, queries).Select(q => q % 3 == 0 ? null : $"{{\"label\":{labels[Base + q]}}}").ToArray();
        var next = Enumerable.Range(0, queries).Select(q => $"{{\"label\":{{\"$eq\":{(labels[Base + q] + 1) % Classes}}}}}").ToArray();
        var calibration = new CalibrationQueries(held[..(queries * Dims)], queries, Dims, null, "queries",
            Filters: [new CalibrationFilters("own.jsonl", own), new CalibrationFilters("next.jsonl", next)]);
        using var idx = new TestData.TempIndex(data, Base, Dims, new IndexBuildOptions { Partitions = 40, Seed = seed, Attributes = table }, calibrate: true, calibration);
        var families = FilteredRecallCalibrator.Measure(idx.Index, calibration, K);
        Assert.Equal(["own.jsonl", "next.jsonl"], families.Select(f => f.Name));
        Assert.Equal(own.Select(t => t is not null), families[0].Filters.Select(f => f is not null));
        Assert.All(families[1].Filters, f => Assert.NotNull(f));
        AssertReplayEqualsEngine(idx, calibration, families, seed);
        var named = idx.Index.Manifest.Calibration!.Filtered!.SelectMany(b => b.Families).Select(f => f[..f.IndexOf(':')]).Distinct().Order();
        Assert.Equal(["next.jsonl", "own.jsonl"], named);
        // Taking fewer queries takes each family's first filters with them.
        var first = calibration.Take(50);
        Assert.All(first.Filters!, f => Assert.Equal(50, f.Texts.Length));
        Assert.Equal(own[..50], first.Filters![0].Texts);
    }

    /// <summary>
    /// Each family's replayed mean recall equals the engine's, with the same filters, at grid plans of several CFs, margins
    /// and R, at the calibration's K and at K = 1 and 100 (recall@K, from prefixes of the same candidate lists).
    /// </summary>
    private static void AssertReplayEqualsEngine(TestData.TempIndex idx, CalibrationQueries calibration, IReadOnlyList<FilteredRecallCalibrator.FamilyMeasurement> families, int seed)
    {
        AssertReplayEqualsEngine(idx, calibration, families, seed, K, RecallCalibrator.RerankFactors, [1, 4]);
        Assert.All(families, f => Assert.Equal(RecallCalibrator.OtherKs, f.ByK!.Select(x => x.K)));
        foreach (int k in new[] { 1, 100 })
        {
            var grid = families[0].ByK!.Single(x => x.K == k).RerankGrid;
            Assert.Equal(RecallCalibrator.RerankGridAt(k), grid);
            AssertReplayEqualsEngine(idx, calibration, families.Select(f => f.At(f.ByK!.Single(x => x.K == k))).ToArray(), seed, k, grid, [grid[0], grid[^1]]);
        }
    }

    private static void AssertReplayEqualsEngine(TestData.TempIndex idx, CalibrationQueries calibration, IReadOnlyList<FilteredRecallCalibrator.FamilyMeasurement> families, int seed,
        int k, int[] rerankGrid, int[] rs)
    {
        // The filtered grid's columns: the CF grid at the default margin, then CF 1 at each smaller margin.
        int grid = FilteredRecallCalibrator.Columns, cfs = RecallCalibrator.CentroidFactors.Length;
        var columns = new[] { 1.0, 1.1, 1.3, 2.0 }.Select(cf => Array.IndexOf(RecallCalibrator.CentroidFactors, cf))
            .Concat(Enumerable.Range(cfs, FilteredRecallCalibrator.ExtraFilterMargins.Length)).ToArray();
        foreach (var family in families)
            foreach (int g in columns)
                foreach (int r in rs)
                {
                    var (cf, margin) = FilteredRecallCalibrator.Column(g);
                    int j = Array.IndexOf(rerankGrid, r) * grid + g;
                    var options = new SearchOptions { CentroidFactor = cf, RerankFactor = r, FilterMargin = margin ?? SearchOptions.DefaultFilterMargin };
                    double sum = 0;
                    int used = 0;
                    for (int i = 0; i < calibration.Count; i++)
                    {
                        if (family.Filters[i] is not { } filter) continue;
                        sum += Recall(idx.Engine, calibration.Data.AsSpan(i * Dims, Dims), filter, options, k);
                        used++;
                    }
                    var (replayed, _, _, counted) = family.Mean(j);
                    Assert.True(used == counted, $"{family.Name}: {used} filtered queries, the calibration counted {counted}");
                    Assert.True(Math.Abs(sum / used - replayed) < 1e-9,
                        $"seed {seed}, {family.Name}, K {k}, CF {cf}, margin {margin}, R {r}: engine {sum / used:F6}, replay {replayed:F6}");
                }
    }

    /// <summary>A 1 % range filters every calibration query; the denser families the ones measured exactly.</summary>
    [Theory]
    [InlineData(400)]
    [InlineData(250)]
    public void DenseFamiliesFilterTheExactRowsAndSparseRangesTheWholeSample(int exact)
    {
        int dense = exact;
        const int seed = 5, sample = 500;
        var (data, _, _, table) = Data(seed);
        using var idx = new TestData.TempIndex(data, Base, Dims, new IndexBuildOptions { Partitions = 40, Seed = seed, Attributes = table }, calibrate: true,
            calibrationSize: sample, exactQueries: exact);
        Assert.Equal(sample, idx.Index.Manifest.Calibration!.Queries);
        // Every 10 % range falls in the top band, whose lower half counts all of its queries; the label families lose the
        // queries whose class is small to the band below.
        var all = idx.Index.Manifest.Calibration.Filtered!.Single(b => b.MinSelectivity == 0.05 && b.MinAnchorRatio is null or 0);
        var counts = all.Families.ToDictionary(f => f[..f.IndexOf(':')], f => int.Parse(f[(f.IndexOf(':') + 2)..f.IndexOf(" queries", StringComparison.Ordinal)], CultureInfo.InvariantCulture));
        output.WriteLine(string.Join("; ", all.Families));
        Assert.Equal(dense, counts["range 10%"]);
        Assert.InRange(counts["own value"], FilteredRecallCalibrator.MinQueriesInBand, dense);
        var sparse = idx.Index.Manifest.Calibration.Filtered!.Single(b => b.MinSelectivity == 0.005 && b.MinAnchorRatio is null or 0);
        output.WriteLine(string.Join("; ", sparse.Families));
        Assert.Contains($"range 1%: {sample} queries", sparse.Families.Select(f => f[..f.IndexOf(',')]));
        // The same bands at the other K: below K = 10 on every query, past it on the exactly measured ones (which every family filters).
        foreach (var atK in idx.Index.Manifest.Calibration.FilteredByK!)
        {
            var band = atK.Bands.Single(b => b.MinSelectivity == 0.005 && b.MinAnchorRatio is null or 0);
            int expected = atK.K < K ? sample : dense;
            Assert.True(band.Families.Any(f => f.StartsWith($"range 1%: {expected} queries", StringComparison.Ordinal)), $"K {atK.K}: {string.Join("; ", band.Families)}");
        }
    }

    /// <summary>
    /// At k = 10 the bands of the calibration's K; at k = 100 those measured at K = 100 (on the K = 10 bands, recall@100 fell
    /// to 0.82–0.90 at target 0.9 on Fashion-MNIST). The next label (a fixed neighbouring class, which the calibration does not
    /// draw: it draws other values uniformly) is held to the target at k = 10 only; at k = 100 it is printed (bench/recall.md).
    /// k = 1 is left to the replay test and the benchmark: recall@1 over 400 queries has a standard error of about 0.011,
    /// wider than the band.
    /// </summary>
    [Theory]
    [InlineData(0.9, K)]
    [InlineData(0.99, K)]
    [InlineData(0.9, 100)]
    [InlineData(0.99, 100)]
    public void HeldOutFilteredRecallReachesTheTarget(double target, int k)
    {
        const int seed = 17;
        var (data, queries, labels, table) = Data(seed);
        using var idx = new TestData.TempIndex(data, Base, Dims, new IndexBuildOptions { Partitions = 60, Seed = seed, Attributes = table }, calibrate: true,
            calibrationSize: 600);
        var compiler = new FilterCompiler(idx.Index.Manifest.Attributes);
        var rng = new Random(seed);
        var kinds = new (string Name, Func<int, string> Filter)[]
        {
            ("next label", q => $"{{\"label\":{{\"$eq\":{(labels[Base + q] + 1) % Classes}}}}}"),
            ("random other label", q => $"{{\"label\":{{\"$eq\":{(labels[Base + q] + 1 + rng.Next(Classes - 1)) % Classes}}}}}"),
            ("range 10%", _ => Range(rng, URange / 10)),
            ("range 1%", _ => Range(rng, URange / 100)),
            ("own label", q => $"{{\"label\":{{\"$eq\":{labels[Base + q]}}}}}"),
        };
        double lowest = 1;
        var under = new List<string>();
        foreach (var (name, make) in kinds)
        {
            double sum = 0;
            SearchResult? first = null;
            for (int q = 0; q < Held; q++)
            {
                var vector = queries.AsSpan(q * Dims, Dims);
                var filter = compiler.Compile(make(q));
                first ??= idx.Engine.Search(vector, new SearchOptions { K = k, Recall = target, Filter = filter });
                sum += Recall(idx.Engine, vector, filter, new SearchOptions { Recall = target }, k);
            }
            double achieved = sum / Held;
            output.WriteLine($"seed {seed}, target {target}, k {k}, {name}: plan CF {first!.Stats.CentroidFactor} R {first.Stats.RerankFactor} " +
                $"({first.Stats.Strategy}), predicted {first.Stats.PredictedRecall} at K {first.Stats.PredictedAtK}, achieved {achieved:F4}");
            if (first.Stats.PredictedAtK is { } atK) Assert.Equal(k, atK);
            if (k != K && name == "next label") continue;
            if (achieved < target) under.Add($"seed {seed}, target {target}, k {k}, {name}: achieved {achieved:F4}");
            lowest = Math.Min(lowest, achieved);
        }
        Assert.True(under.Count == 0, string.Join("; ", under));
        // A band's plan holds for its hardest family, which lands in [target, target + 0.02]; easier ones overshoot.
        Assert.InRange(lowest, target, target + 0.02);
    }

    private static string Range(Random rng, int width)
    {
        int start = rng.Next(URange - width);
        return $"{{\"u\":{{\"$gte\":{start},\"$lt\":{start + width}}}}}";
    }
}
