using Squash.Core;
using Squash.Index.Build;
using Squash.Index.Format;
using Squash.Index.Model;
using Xunit.Abstractions;

namespace Squash.Search.Tests;

/// <summary>
/// Recall targets: the build-time calibration's replay of every plan equals what the engine returns for that plan,
/// the planner turns a target into the cheapest plan the calibration says reaches it, and on held-out queries
/// (never in the index, never calibrated on) the achieved recall lands in [target, target + 0.02].
/// </summary>
public class RecallTargetTests(ITestOutputHelper output)
{
    private const int Dims = 24, Base = 6000, Held = 800, K = 10;

    private static (float[] Base, float[] Queries) Split(int seed)
    {
        var all = TestData.Clustered(Base + Held, Dims, clusters: 25, seed: seed);
        return (all[..(Base * Dims)], all[(Base * Dims)..]);
    }

    private static double MeanRecall(SearchEngine engine, float[] data, float[] queries, int count, SearchOptions options, out SearchResult first)
    {
        double sum = 0;
        first = null!;
        for (int i = 0; i < count; i++)
        {
            var q = queries.AsSpan(i * Dims, Dims);
            var got = engine.Search(q, options);
            if (i == 0) first = got;
            var truth = TestData.BruteForce(data, Base, Dims, q, options.K, Metric.L2).Select(e => e.Id).ToHashSet();
            sum += got.Ids.Count(truth.Contains) / (double)options.K;
        }
        return sum / count;
    }

    [Theory]
    [InlineData(0.9)]
    [InlineData(0.95)]
    [InlineData(0.99)]
    public void HeldOutRecallLandsInTheTargetBand(double target)
    {
        const int seed = 7;
        var (data, queries) = Split(seed);
        // Every dimension kept: with the default truncation this data's recall plateaus near 0.99, where the
        // calibration's small optimism (a few thousandths) decides the band (the dims-selection part of the issue).
        using var idx = new TestData.TempIndex(data, Base, Dims, new IndexBuildOptions { Partitions = 60, Seed = seed, EnergyKept = 1 }, calibrate: true,
            calibrationSize: 600);
        Assert.NotNull(idx.Index.Manifest.Calibration);
        double achieved = MeanRecall(idx.Engine, data, queries, Held, new SearchOptions { K = K, Recall = target }, out var first);
        output.WriteLine($"seed {seed}: target {target}: plan CF {first.Stats.CentroidFactor} R {first.Stats.RerankFactor}, predicted {first.Stats.PredictedRecall}, achieved {achieved:F4}");
        Assert.Equal(target, first.Stats.RecallTarget);
        Assert.False(first.Stats.PredictedRecall is null, "a calibrated index predicts the recall of its plan");
        Assert.InRange(achieved, target, target + 0.02);
    }

    /// <summary>
    /// A query for k ≠ 10 neighbours plans with the frontier measured at the smallest K ≥ k: the plan that finds 95 % of the
    /// 10 nearest finds fewer of the 100 nearest, and a smaller share of the single nearest, and without it achieved recall
    /// fell under the band (bench/recall.md).
    /// </summary>
    [Theory]
    [InlineData(100, 0.9)]
    [InlineData(100, 0.99)]
    [InlineData(1, 0.9)]
    [InlineData(5, 0.99)]
    [InlineData(20, 0.95)]
    [InlineData(30, 0.95)]
    public void HeldOutRecallAtOtherKLandsInTheTargetBand(int k, double target)
    {
        const int seed = 7;
        var (data, queries) = Split(seed);
        using var idx = new TestData.TempIndex(data, Base, Dims, new IndexBuildOptions { Partitions = 60, Seed = seed, EnergyKept = 1 }, calibrate: true,
            calibrationSize: 600);
        Assert.Equal(RecallCalibrator.OtherKs, idx.Index.Manifest.Calibration!.ByK!.Select(f => f.K));
        var atK = idx.Index.Manifest.Calibration.ByK!.Single(f => f.K == RecallPlanner.CalibratedK(idx.Index.Manifest.Calibration, k));
        Assert.Equal(atK.K < 10 ? 600 : RecallCalibrator.DefaultQueries, atK.Queries);
        double achieved = MeanRecall(idx.Engine, data, queries, Held, new SearchOptions { K = k, Recall = target }, out var first);
        var atTen = RecallPlanner.Resolve(idx.Index.Manifest.Calibration, new SearchOptions { K = K, Recall = target }, out _);
        output.WriteLine($"seed {seed}: target {target} at k {k} (calibrated at {atK.K}): plan CF {first.Stats.CentroidFactor} R {first.Stats.RerankFactor} cap {first.Stats.MaxPartitions}, predicted {first.Stats.PredictedRecall}, achieved {achieved:F4}; at k 10 CF {atTen.CentroidFactor} R {atTen.RerankFactor}");
        Assert.InRange(achieved, target, target + 0.02);
    }

    [Fact]
    public void ReplayedRecallEqualsTheEnginesForEveryFrontierPlan()
    {
        const int seed = 11;
        var (data, queries) = Split(seed);
        // User queries (no leave-one-out), so that each replayed plan can be run through the engine as it is.
        var calibration = new CalibrationQueries(queries[..(150 * Dims)], 150, Dims, null, "queries");
        using var idx = new TestData.TempIndex(data, Base, Dims, new IndexBuildOptions { Partitions = 40, Seed = seed }, calibrate: true, calibration);
        var plans = idx.Index.Manifest.Calibration!.Plans;
        Assert.True(plans.Count >= 5, $"the frontier has {plans.Count} plans");
        foreach (var plan in plans)
        {
            double sum = 0;
            for (int i = 0; i < calibration.Count; i++)
            {
                var q = calibration.Data.AsSpan(i * Dims, Dims);
                var exact = idx.Engine.Search(q, new SearchOptions { K = K, Exact = true }).Ids.ToHashSet();
                var got = idx.Engine.Search(q, new SearchOptions { K = K, CentroidFactor = plan.CentroidFactor, RerankFactor = plan.RerankFactor, MaxPartitions = plan.MaxPartitions });
                Assert.Equal(plan.MaxPartitions, got.Stats.MaxPartitions);
                sum += got.Ids.Count(exact.Contains) / (double)K;
            }
            Assert.Equal(Math.Round(sum / calibration.Count, 5), plan.Recall, 5);
        }
        // Capped plans are measured, and on this data some lie on the frontier (a failure here means the cap is never replayed).
        Assert.Contains(plans, p => p.MaxPartitions is not null);
        // The frontiers at every other K the same way, recall@K against the exact K (R up to what K's lists hold).
        var byK = idx.Index.Manifest.Calibration!.ByK!;
        Assert.Equal(RecallCalibrator.OtherKs, byK.Select(f => f.K));
        foreach (var atK in byK)
        {
            Assert.Equal(calibration.Count, atK.Queries);
            Assert.True(atK.Plans.Count >= 3, $"the K = {atK.K} frontier has {atK.Plans.Count} plans");
            var exactAtK = Enumerable.Range(0, calibration.Count).Select(i =>
                idx.Engine.Search(calibration.Data.AsSpan(i * Dims, Dims), new SearchOptions { K = atK.K, Exact = true }).Ids.ToHashSet()).ToArray();
            foreach (var plan in atK.Plans)
            {
                Assert.Contains(plan.RerankFactor, RecallCalibrator.RerankGridAt(atK.K));
                double sum = 0;
                for (int i = 0; i < calibration.Count; i++)
                {
                    var got = idx.Engine.Search(calibration.Data.AsSpan(i * Dims, Dims), new SearchOptions { K = atK.K, CentroidFactor = plan.CentroidFactor,
                        RerankFactor = plan.RerankFactor, MaxPartitions = plan.MaxPartitions });
                    sum += got.Ids.Count(exactAtK[i].Contains) / (double)atK.K;
                }
                Assert.True(Math.Round(sum / calibration.Count, 5) == plan.Recall, $"K {atK.K}, plan {plan}: the engine's recall is {sum / calibration.Count:F5}");
            }
        }
        // The frontier is what the planner relies on: cost and recall both rise along it.
        for (int i = 1; i < plans.Count; i++)
        {
            Assert.True(plans[i].Cost >= plans[i - 1].Cost, $"plan {i} is cheaper than plan {i - 1}");
            Assert.True(plans[i].Recall > plans[i - 1].Recall, $"plan {i} adds no recall over plan {i - 1}");
        }
    }

    private static RecallCalibration Calibration(params CalibratedPlan[] plans) => new() { K = 10, Queries = 300, Source = "base-sample", Plans = plans };

    [Fact]
    public void PlannerPicksTheCheapestPlanThatReachesTheTargetWithItsMargin()
    {
        var cal = Calibration(
            new CalibratedPlan(1.1, 2, 0.90, 0.005, 100),
            new CalibratedPlan(1.2, 2, 0.95, 0.005, 200),
            new CalibratedPlan(1.3, 4, 0.965, 0.004, 300),
            new CalibratedPlan(1.6, 8, 0.995, 0.001, 900));
        var o = RecallPlanner.Resolve(cal, new SearchOptions { Recall = 0.95 }, out var predicted);
        // 0.95 − 2 × 0.005 < 0.95: the next plan, 0.965 − 0.008 ≥ 0.95, mixed with the one below it to aim at 0.96
        // (MixedPlanTests); a draw of 0 runs the higher plan.
        Assert.Equal((1.3, 4, false, 0.96), (o.CentroidFactor, o.RerankFactor, o.Exact, predicted!.Value));
        Assert.Null(o.Recall);
        // A plan that clears its standard errors but not the aim inside the band is passed over: 0.9935 − 2 × 0.0005
        // ≥ 0.99, yet it would allow more than half the misses 0.99 allows (aim 0.995): alone it never serves the target,
        // only mixed with the plan above the aim so that the mix predicts the aim.
        var high = Calibration(new CalibratedPlan(1.3, 4, 0.9935, 0.0005, 500), new CalibratedPlan(1.5, 4, 0.9952, 0.0004, 700));
        o = RecallPlanner.Resolve(high, new SearchOptions { Recall = 0.99 }, out predicted);
        Assert.Equal((1.5, 0.995), (o.CentroidFactor, predicted!.Value));
        Assert.Equal(0.995, RecallPlanner.Aim(0.99), 12);
        Assert.Equal(0.96, RecallPlanner.Aim(0.95), 12);
        o = RecallPlanner.Resolve(cal, new SearchOptions { Recall = 0.5 }, out predicted);
        Assert.Equal((1.1, 2, 0.90), (o.CentroidFactor, o.RerankFactor, predicted!.Value));
        // Beyond every plan, and 1 itself: exact.
        o = RecallPlanner.Resolve(cal, new SearchOptions { Recall = 0.999 }, out predicted);
        Assert.True(o.Exact);
        Assert.Equal(1, predicted);
        o = RecallPlanner.Resolve(cal, new SearchOptions { Recall = 1 }, out predicted);
        Assert.True(o.Exact);
        // No target: CF and R as given; no calibration: the given CF and R, no prediction.
        o = RecallPlanner.Resolve(cal, new SearchOptions { CentroidFactor = 1.7, RerankFactor = 3 }, out predicted);
        Assert.Equal((1.7, 3), (o.CentroidFactor, o.RerankFactor));
        Assert.Null(predicted);
        o = RecallPlanner.Resolve(null, new SearchOptions { Recall = 0.95, CentroidFactor = 1.4, RerankFactor = 5 }, out predicted);
        Assert.Equal((1.4, 5, false), (o.CentroidFactor, o.RerankFactor, o.Exact));
        Assert.Null(predicted);
        // A capped plan's cap comes with it, and replaces a cap the query gave by hand (a target ignores the hand-set plan);
        // an uncapped plan clears it.
        var capped = Calibration(new CalibratedPlan(1.2, 2, 0.93, 0.004, 100), new CalibratedPlan(1.4, 2, 0.97, 0.003, 150, MaxPartitions: 6));
        o = RecallPlanner.Resolve(capped, new SearchOptions { Recall = 0.95, MaxPartitions = 2 }, out predicted);
        Assert.Equal((1.4, 2, (int?)6), (o.CentroidFactor, o.RerankFactor, o.MaxPartitions));
        o = RecallPlanner.Resolve(capped, new SearchOptions { Recall = 0.9, MaxPartitions = 2 }, out predicted);
        Assert.Equal((1.2, (int?)null), (o.CentroidFactor, o.MaxPartitions));
    }

    [Fact]
    public void AQueryPlansWithTheFrontierMeasuredForItsK()
    {
        var atTen = Calibration(new CalibratedPlan(1.1, 2, 0.90, 0.004, 100), new CalibratedPlan(1.2, 2, 0.97, 0.003, 200));
        var at1 = new KCalibration(1, 600, [new CalibratedPlan(1.0, 1, 0.97, 0.002, 30)]);
        var at50 = new KCalibration(50, 300, [new CalibratedPlan(1.3, 2, 0.97, 0.002, 300)]);
        var at100 = new KCalibration(100, 300, [new CalibratedPlan(1.5, 4, 0.97, 0.002, 500)]);
        var cal = atTen with { ByK = [at1, at50, at100] };
        // At K = 10 the two plans mix to aim at 0.96 (a draw of 0 runs the higher); elsewhere one plan serves.
        foreach (var (k, cf, expected, measuredAt) in new[] { (1, 1.0, 0.97, 1), (2, 1.2, 0.96, 10), (10, 1.2, 0.96, 10), (11, 1.3, 0.97, 50), (50, 1.3, 0.97, 50),
            (51, 1.5, 0.97, 100), (100, 1.5, 0.97, 100), (1000, 1.5, 0.97, 100) })
        {
            var o = RecallPlanner.Resolve(cal, new SearchOptions { K = k, Recall = 0.95 }, out var predicted);
            Assert.True((cf, expected) == (o.CentroidFactor, predicted), $"k {k}: CF {o.CentroidFactor} predicted {predicted}, expected CF {cf} predicted {expected}");
            Assert.Equal(measuredAt, RecallPlanner.CalibratedK(cal, k));
        }
        // Without deeper frontiers (an index calibrated before them) every k plans with the K = 10 one.
        Assert.Equal(1.2, RecallPlanner.Resolve(atTen, new SearchOptions { K = 100, Recall = 0.95 }, out _).CentroidFactor);
        // A filtered query plans with the bands measured for its k the same way; without bands at other K, with the K = 10 ones.
        static FilteredCalibration Band(double cf) => new() { MinSelectivity = 0.01, MaxSelectivity = 1, Queries = 300, Families = ["range"],
            Plans = [new CalibratedPlan(cf, 2, 0.97, 0.002, 50)] };
        var banded = cal with { Filtered = [Band(1.05)] };
        Assert.Equal(1.05, RecallPlanner.Resolve(banded, new SearchOptions { K = 100, Recall = 0.95 }, out _, selectivity: 0.1).CentroidFactor);
        var bandedByK = banded with { FilteredByK = [new FilteredKCalibration(1, [Band(1.01)]), new FilteredKCalibration(100, [Band(1.4)])] };
        foreach (var (k, cf, measuredAt) in new[] { (1, 1.01, 1), (2, 1.05, 10), (10, 1.05, 10), (11, 1.4, 100), (100, 1.4, 100), (1000, 1.4, 100) })
        {
            var o = RecallPlanner.Resolve(bandedByK, new SearchOptions { K = k, Recall = 0.95 }, out var predicted, selectivity: 0.1);
            Assert.True(cf == o.CentroidFactor, $"filtered, k {k}: CF {o.CentroidFactor}, expected {cf}");
            Assert.Equal(measuredAt, RecallPlanner.CalibratedK(bandedByK, k, filtered: true));
            Assert.Equal(measuredAt, RecallPlanner.PredictedAtK(bandedByK, o, predicted, k, selectivity: 0.1));
        }
        // An unfiltered query is not moved by the filtered bands' K.
        Assert.Equal(50, RecallPlanner.CalibratedK(bandedByK, 11));
    }

    [Fact]
    public void TheEngineReportsTheTargetAndThePlanItChose()
    {
        var (data, queries) = Split(3);
        using var idx = new TestData.TempIndex(data, Base, Dims, new IndexBuildOptions { Partitions = 30, Seed = 3 }, calibrate: true);
        var cal = idx.Index.Manifest.Calibration!;
        Assert.Equal(("base-sample", RecallCalibrator.DefaultQueries, RecallCalibrator.DefaultK), (cal.Source, cal.Queries, cal.K));
        // The plan for this query: a mix's plan follows from the query's bytes.
        var expected = RecallPlanner.Resolve(cal, new SearchOptions { Recall = 0.95 }, out var predicted,
            draw: RecallPlanner.Draw(RecallPlanner.VectorHash(queries.AsSpan(0, Dims))));
        var got = idx.Engine.Search(queries.AsSpan(0, Dims), new SearchOptions { Recall = 0.95 });
        Assert.Equal((0.95, predicted, expected.CentroidFactor, expected.RerankFactor, expected.MaxPartitions),
            (got.Stats.RecallTarget!.Value, got.Stats.PredictedRecall, got.Stats.CentroidFactor, got.Stats.RerankFactor, got.Stats.MaxPartitions));
        // The same answer as the plan given by hand.
        var byHand = idx.Engine.Search(queries.AsSpan(0, Dims), new SearchOptions { CentroidFactor = expected.CentroidFactor, RerankFactor = expected.RerankFactor,
            MaxPartitions = expected.MaxPartitions });
        Assert.Equal(byHand.Ids, got.Ids);
        // Exact target: certified, equal to brute force.
        var exact = idx.Engine.Search(queries.AsSpan(0, Dims), new SearchOptions { Recall = 1 });
        Assert.True(exact.Stats.Certified);
        Assert.Equal(TestData.BruteForce(data, Base, Dims, queries.AsSpan(0, Dims), 10, Metric.L2).Select(e => e.Id), exact.Ids);
    }

    [Fact]
    public void AnImpossibleCalibrationInAManifestIsACorruptIndex()
    {
        var (data, _) = Split(5);
        using var idx = new TestData.TempIndex(data, Base, Dims, new IndexBuildOptions { Partitions = 10, Seed = 5 }, calibrate: true);
        var bad = idx.Index.Manifest with { Calibration = idx.Index.Manifest.Calibration! with { Plans = [new CalibratedPlan(1.2, 2, 1.5, 0.01, 10)] } };
        var e = Assert.Throws<CorruptIndexException>(() => IndexManifest.Parse(bad.ToJson(), "m.json"));
        Assert.Contains("recall calibration", e.Message);
        // A filter margin the query options would refuse (JSON carries no infinity: below 1 is what a file can hold), or on an unfiltered plan, is as impossible.
        foreach (var (plans, bandPlans) in new (CalibratedPlan[], CalibratedPlan[])[]
        {
            ([new CalibratedPlan(1, 1, 0.9, 0.01, 10, FilterMargin: 1)], [new CalibratedPlan(1, 1, 0.9, 0.01, 10)]),
            ([new CalibratedPlan(1, 1, 0.9, 0.01, 10)], [new CalibratedPlan(1, 1, 0.9, 0.01, 10, FilterMargin: 0.5)]),
            ([new CalibratedPlan(1, 1, 0.9, 0.01, 10)], [new CalibratedPlan(1, 1, 0.9, 0.01, 10, FilterMargin: 0)]),
            // A partition cap below 1, or on a filtered band's plan (whose walk the cap does not apply to).
            ([new CalibratedPlan(1, 1, 0.9, 0.01, 10, MaxPartitions: 0)], [new CalibratedPlan(1, 1, 0.9, 0.01, 10)]),
            ([new CalibratedPlan(1, 1, 0.9, 0.01, 10)], [new CalibratedPlan(1, 1, 0.9, 0.01, 10, MaxPartitions: 4)]),
        })
        {
            var band = new FilteredCalibration { MinSelectivity = 0.005, MaxSelectivity = 0.05, Queries = 300, Families = ["range 1%"], Plans = bandPlans };
            var wrong = idx.Index.Manifest with { Calibration = idx.Index.Manifest.Calibration! with { Plans = plans, Filtered = [band] } };
            Assert.Throws<CorruptIndexException>(() => IndexManifest.Parse(wrong.ToJson(), "m.json"));
        }
        // The margins a build writes are accepted.
        var good = new FilteredCalibration { MinSelectivity = 0.005, MaxSelectivity = 0.05, Queries = 300, Families = ["range 1%"],
            Plans = [new CalibratedPlan(1, 1, 0.87, 0.01, 10, FilterMargin: 1), new CalibratedPlan(1, 1, 0.95, 0.01, 12, FilterMargin: 1.5)] };
        var ok = idx.Index.Manifest with { Calibration = idx.Index.Manifest.Calibration! with { Filtered = [good] } };
        Assert.Equal(1.5, IndexManifest.Parse(ok.ToJson(), "m.json").Calibration!.Filtered![0].Plans[1].FilterMargin);
        // A frontier at another K must lie past the one before it and at another K than the calibration's own, hold plans,
        // and each possible unfiltered.
        var plan = new CalibratedPlan(1.3, 2, 0.95, 0.01, 10);
        foreach (var (byK, at) in new (KCalibration[], int)[]
        {
            ([new KCalibration(10, 300, [plan])], 10),
            ([new KCalibration(0, 300, [plan])], 0),
            ([new KCalibration(100, 300, [plan]), new KCalibration(50, 300, [plan])], 50),
            ([new KCalibration(5, 300, [plan]), new KCalibration(5, 300, [plan])], 5),
            ([new KCalibration(100, 0, [plan])], 100),
            ([new KCalibration(100, 300, [])], 100),
        })
        {
            var wrongK = idx.Index.Manifest with { Calibration = idx.Index.Manifest.Calibration! with { ByK = byK } };
            var error = Assert.Throws<CorruptIndexException>(() => IndexManifest.Parse(wrongK.ToJson(), "m.json"));
            Assert.Equal($"manifest 'm.json': the recall calibration holds an impossible frontier at K {at}", error.Message);
        }
        var cappedDeep = idx.Index.Manifest with { Calibration = idx.Index.Manifest.Calibration! with { ByK = [new KCalibration(100, 300, [plan with { MaxPartitions = 0 }])] } };
        Assert.Equal($"manifest 'm.json': the recall calibration at K 100 holds an impossible plan ({plan with { MaxPartitions = 0 }})",
            Assert.Throws<CorruptIndexException>(() => IndexManifest.Parse(cappedDeep.ToJson(), "m.json")).Message);
        // Filtered bands at another K: past the one before, not at the calibration's own K, beside bands at it, each band possible.
        var fine = new FilteredCalibration { MinSelectivity = 0.005, MaxSelectivity = 0.05, Queries = 300, Families = ["range 1%"], Plans = [plan] };
        foreach (var (filtered, byK, message) in new (FilteredCalibration[]?, FilteredKCalibration[], string)[]
        {
            ([fine], [new FilteredKCalibration(10, [fine])], "the filtered recall calibration holds impossible bands at K 10"),
            ([fine], [new FilteredKCalibration(100, [fine]), new FilteredKCalibration(1, [fine])], "the filtered recall calibration holds impossible bands at K 1"),
            ([fine], [new FilteredKCalibration(100, [])], "the filtered recall calibration holds impossible bands at K 100"),
            ([fine], [new FilteredKCalibration(100, [fine with { MaxSelectivity = 0.001 }])], "the filtered recall calibration at K 100 holds an impossible band"),
            ([fine], [new FilteredKCalibration(100, [fine with { Plans = [plan with { MaxPartitions = 4 }] }])],
                $"the filtered recall calibration at K 100 holds an impossible plan ({plan with { MaxPartitions = 4 }})"),
            (null, [new FilteredKCalibration(100, [fine])], "the filtered recall calibration has bands at other K but none at K 10"),
        })
        {
            var wrongBands = idx.Index.Manifest with { Calibration = idx.Index.Manifest.Calibration! with { Filtered = filtered, FilteredByK = byK } };
            Assert.Equal($"manifest 'm.json': {message}", Assert.Throws<CorruptIndexException>(() => IndexManifest.Parse(wrongBands.ToJson(), "m.json")).Message);
        }
        var bandsOk = idx.Index.Manifest with { Calibration = idx.Index.Manifest.Calibration! with { Filtered = [fine], FilteredByK = [new FilteredKCalibration(1, [fine]), new FilteredKCalibration(100, [fine])] } };
        Assert.Equal([1, 100], IndexManifest.Parse(bandsOk.ToJson(), "m.json").Calibration!.FilteredByK!.Select(b => b.K));
        var capped = idx.Index.Manifest with { Calibration = idx.Index.Manifest.Calibration! with { Plans = [new CalibratedPlan(1.3, 2, 0.95, 0.01, 10, MaxPartitions: 4)] } };
        Assert.Equal(4, IndexManifest.Parse(capped.ToJson(), "m.json").Calibration!.Plans.Single().MaxPartitions);
        // Kept calibration queries: only the one blob name, always with its version, a whole blob of at least one row's header.
        var m = idx.Index.Manifest;
        foreach (var kept in new[]
        {
            new SegmentRef("../manifest.json", 100) { Version = m.Version },
            new SegmentRef(RecallCalibration.QueriesBlobName, 100),
            new SegmentRef(RecallCalibration.QueriesBlobName, 100) { Version = m.Version, Offset = 8 },
            new SegmentRef(RecallCalibration.QueriesBlobName, 4) { Version = m.Version },
        })
        {
            var keptWrong = m with { Calibration = m.Calibration! with { QueriesBlob = kept } };
            var error = Assert.Throws<CorruptIndexException>(() => IndexManifest.Parse(keptWrong.ToJson(), "m.json"));
            Assert.Equal($"manifest 'm.json': the recall calibration names its queries as an impossible blob ('{kept.Name}', {kept.Bytes} bytes)", error.Message);
        }
        var keptOk = m with { Calibration = m.Calibration! with { QueriesBlob = new SegmentRef(RecallCalibration.QueriesBlobName, 100) { Version = m.Version } } };
        Assert.Equal(m.Version, IndexManifest.Parse(keptOk.ToJson(), "m.json").Calibration!.QueriesBlob!.Version);
        // Kept filter families: family f's file under calibration-filters/f/, with the queries kept too.
        foreach (var (filters, queries) in new (SegmentRef, SegmentRef?)[]
        {
            (new SegmentRef("calibration-filters/0/own.jsonl", 10) { Version = m.Version }, null),
            (new SegmentRef("calibration-filters/1/own.jsonl", 10) { Version = m.Version }, keptOk.Calibration!.QueriesBlob),
            (new SegmentRef("calibration-filters/0/a/own.jsonl", 10) { Version = m.Version }, keptOk.Calibration!.QueriesBlob),
            (new SegmentRef("calibration-filters/0/..", 10) { Version = m.Version }, keptOk.Calibration!.QueriesBlob),
            (new SegmentRef("calibration-filters/0/own.jsonl", 10), keptOk.Calibration!.QueriesBlob),
        })
        {
            var wrongFilters = m with { Calibration = m.Calibration! with { QueriesBlob = queries, FilterBlobs = [filters] } };
            var error = Assert.Throws<CorruptIndexException>(() => IndexManifest.Parse(wrongFilters.ToJson(), "m.json"));
            Assert.Equal($"manifest 'm.json': the recall calibration names its filter family 0 as an impossible blob ('{filters.Name}', 10 bytes)", error.Message);
        }
        var filtersOk = keptOk with { Calibration = keptOk.Calibration! with { FilterBlobs = [new SegmentRef("calibration-filters/0/own.jsonl", 10) { Version = m.Version }] } };
        Assert.Equal("calibration-filters/0/own.jsonl", IndexManifest.Parse(filtersOk.ToJson(), "m.json").Calibration!.FilterBlobs!.Single().Name);
    }

    [Fact]
    public void TinyIndexesAreNotCalibratedAndPlanWithTheDefaults()
    {
        var data = TestData.Clustered(150, 8, 3, 1);
        using var idx = new TestData.TempIndex(data, 150, 8, new IndexBuildOptions { Partitions = 3 }, calibrate: true);
        Assert.Null(idx.Index.Manifest.Calibration);
        var got = idx.Engine.Search(data.AsSpan(0, 8), new SearchOptions { Recall = 0.95 });
        var defaults = new SearchOptions();
        Assert.Equal((defaults.CentroidFactor, defaults.RerankFactor), (got.Stats.CentroidFactor, got.Stats.RerankFactor));
        Assert.Null(got.Stats.PredictedRecall);
    }
}
