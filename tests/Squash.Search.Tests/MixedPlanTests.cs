using Squash.Core;
using Squash.Index.Build;
using Squash.Index.Model;
using Xunit.Abstractions;

namespace Squash.Search.Tests;

/// <summary>
/// Mixed plans: a target between two frontier plans runs the higher on a share of the queries and the lower on the rest,
/// so that the mix predicts the aim exactly at the least mean cost; which plan a query runs follows from its bytes.
/// </summary>
public class MixedPlanTests(ITestOutputHelper output)
{
    private static RecallCalibration Calibration(params CalibratedPlan[] plans) => new() { K = 10, Queries = 300, Source = "base-sample", Plans = plans };

    [Fact]
    public void AMixPredictsTheAimAndCostsLessThanTheSinglePlan()
    {
        var plans = new[]
        {
            new CalibratedPlan(1.1, 2, 0.90, 0.005, 100),
            new CalibratedPlan(1.2, 2, 0.95, 0.005, 200),
            new CalibratedPlan(1.3, 4, 0.965, 0.004, 300),
            new CalibratedPlan(1.6, 8, 0.995, 0.001, 900),
        };
        // 0.95 aims at 0.96: 2/3 of the queries on (1.3, 4), 1/3 on (1.2, 2), 266.7 bytes instead of 300.
        var mix = RecallPlanner.Mix(plans, 0.95)!;
        Assert.Equal((plans[1], plans[2]), (mix.Low, mix.High));
        Assert.Equal(2.0 / 3, mix.HighShare, 9);
        Assert.Equal(0.96, mix.Predicted, 9);
        Assert.Equal(800.0 / 3, mix.Cost, 6);
        Assert.True(mix.Mixed);
        // The share realised over queries that spread evenly, and each query's plan fixed by its draw.
        Assert.Same(plans[2], mix.PlanFor(0));
        Assert.Same(plans[2], mix.PlanFor(0.66));
        Assert.Same(plans[1], mix.PlanFor(0.67));
        var cal = Calibration(plans);
        var o = RecallPlanner.Resolve(cal, new SearchOptions { Recall = 0.95 }, out var predicted, out var share, draw: 0.9);
        Assert.Equal((1.2, 2, false, 0.96), (o.CentroidFactor, o.RerankFactor, o.Exact, predicted!.Value));
        Assert.Equal(1.0 / 3, share!.Value, 9);
        o = RecallPlanner.Resolve(cal, new SearchOptions { Recall = 0.95 }, out predicted, out share, draw: 0.1);
        Assert.Equal((1.3, 4, 0.96), (o.CentroidFactor, o.RerankFactor, predicted!.Value));
        Assert.Equal(2.0 / 3, share!.Value, 9);
        // Every plan above the aim: the cheapest single plan, no share.
        o = RecallPlanner.Resolve(cal, new SearchOptions { Recall = 0.5 }, out predicted, out share, draw: 0.9);
        Assert.Equal((1.1, 2, 0.90), (o.CentroidFactor, o.RerankFactor, predicted!.Value));
        Assert.Null(share);
    }

    [Fact]
    public void WhereTheMarginBindsTheMixRunsTheHigherPlanOnMoreQueries()
    {
        // At the aim's share (2/3) the mix's conservative standard error, 2/3 · 0.001 + 1/3 · 0.02 = 0.0073, leaves
        // 0.96 − 2 · 0.0073 < 0.95: the share rises until recall less two errors is 0.95 again, p = 0.04 / 0.053.
        var a = new CalibratedPlan(1.2, 2, 0.95, 0.02, 200);
        var b = new CalibratedPlan(1.3, 4, 0.965, 0.001, 300);
        var mix = RecallPlanner.Mix([a, b], 0.95)!;
        Assert.Equal((a, b), (mix.Low, mix.High));
        Assert.Equal(0.04 / 0.053, mix.HighShare, 9);
        Assert.Equal(0.95, mix.HighShare * 0.963 + (1 - mix.HighShare) * 0.91, 9);
        Assert.True(mix.Predicted > RecallPlanner.Aim(0.95));
        Assert.True(mix.Cost < b.Cost);
        // The single plan, as before mixes, where the plan below the aim has no room to share: it alone keeps no margin
        // and the plan above has none to spare.
        var tight = new CalibratedPlan(1.3, 4, 0.97, 0.01, 300);
        mix = RecallPlanner.Mix([a, tight], tight.Recall - RecallPlanner.StdErrors * tight.RecallStdError)!;
        Assert.False(mix.Mixed);
        Assert.Same(tight, mix.High);
        // Nothing reaches the target with its margin: exact, as before.
        var o = RecallPlanner.Resolve(Calibration(a, b), new SearchOptions { Recall = 0.97 }, out var predicted, out var share, draw: 0.5);
        Assert.True(o.Exact);
        Assert.Equal(1, predicted);
        Assert.Null(share);
    }

    [Fact]
    public void AFilteredBandsMarginPlansCarryTheirMarginIntoTheQuery()
    {
        // A 1 % band where CF cannot go below its cheapest plan: smaller filter margins are its cheaper plans.
        var m1 = new CalibratedPlan(1, 1, 0.87, 0.005, 50, FilterMargin: 1);
        var m15 = new CalibratedPlan(1, 1, 0.95, 0.004, 70, FilterMargin: 1.5);
        var cf1 = new CalibratedPlan(1, 1, 0.985, 0.002, 90);
        var cal = Calibration(new CalibratedPlan(1.1, 2, 0.90, 0.005, 100), new CalibratedPlan(1.3, 4, 0.999, 0.0005, 300)) with
        {
            Filtered = [new FilteredCalibration { MinSelectivity = 0.005, MaxSelectivity = 0.05, Queries = 300, Families = ["range 1%"], Plans = [m1, m15, cf1] }],
        };
        // 0.9 aims at 0.91: half the queries at margin 1 (0.87), half at 1.5 (0.95).
        var high = RecallPlanner.Resolve(cal, new SearchOptions { Recall = 0.9 }, out var predicted, out var share, selectivity: 0.01, draw: 0.1);
        Assert.Equal((1.0, 1, 1.5, 0.91), (high.CentroidFactor, high.RerankFactor, high.FilterMargin, predicted!.Value));
        Assert.Equal(0.5, share!.Value, 9);
        var low = RecallPlanner.Resolve(cal, new SearchOptions { Recall = 0.9 }, out _, out _, selectivity: 0.01, draw: 0.9);
        Assert.Equal(1.0, low.FilterMargin);
        // The default margin's plan keeps the default; unfiltered plans have none of their own.
        Assert.Equal(SearchOptions.DefaultFilterMargin, RecallPlanner.Resolve(cal, new SearchOptions { Recall = 0.97 }, out _, selectivity: 0.01).FilterMargin);
        Assert.Equal(SearchOptions.DefaultFilterMargin, RecallPlanner.Resolve(cal, new SearchOptions { Recall = 0.9 }, out _).FilterMargin);
    }

    [Fact]
    public void TargetOneAndIndexesWithoutCalibrationAreUnchanged()
    {
        var cal = Calibration(new CalibratedPlan(1.1, 2, 0.90, 0.005, 100), new CalibratedPlan(1.3, 4, 0.999, 0.0005, 300));
        foreach (double draw in new[] { 0, 0.5, 0.999 })
        {
            var o = RecallPlanner.Resolve(cal, new SearchOptions { Recall = 1 }, out var predicted, out var share, draw: draw);
            Assert.Equal((true, 1.0), (o.Exact, predicted!.Value));
            Assert.Null(share);
            o = RecallPlanner.Resolve(null, new SearchOptions { Recall = 0.95, CentroidFactor = 1.4, RerankFactor = 5 }, out predicted, out share, draw: draw);
            Assert.Equal((1.4, 5, false), (o.CentroidFactor, o.RerankFactor, o.Exact));
            Assert.Null(predicted);
            Assert.Null(share);
            o = RecallPlanner.Resolve(cal, new SearchOptions { CentroidFactor = 1.7, RerankFactor = 3 }, out predicted, out share, draw: draw);
            Assert.Equal((1.7, 3), (o.CentroidFactor, o.RerankFactor));
            Assert.Null(predicted);
            Assert.Null(share);
        }
    }

    [Fact]
    public void TheChosenMixIsTheCheapestOfEveryPairThatKeepsTheMargin()
    {
        var rng = new Random(12);
        int mixed = 0, single = 0, none = 0;
        for (int trial = 0; trial < 3000; trial++)
        {
            // A random frontier: cost and recall both rising, uneven steps, standard errors that sometimes break the margin.
            int n = rng.Next(1, 12);
            var plans = new List<CalibratedPlan>();
            double recall = 0.6 + 0.3 * rng.NextDouble(), cost = 50 + 100 * rng.NextDouble();
            for (int i = 0; i < n; i++)
            {
                plans.Add(new CalibratedPlan(1 + i * 0.05, 1 << rng.Next(4), Math.Round(recall, 5), Math.Round(0.012 * rng.NextDouble() * rng.NextDouble(), 5), Math.Round(cost)));
                recall += (1 - recall) * (0.05 + 0.6 * rng.NextDouble());
                cost += 10 + 400 * rng.NextDouble() * rng.NextDouble();
            }
            double target = new[] { 0.9, 0.95, 0.99, 0.8 + 0.19 * rng.NextDouble() }[rng.Next(4)];
            var got = RecallPlanner.Mix(plans, target);
            var brute = BruteForce(plans, target);
            if (brute is null)
            {
                Assert.Null(got);
                none++;
                continue;
            }
            Assert.NotNull(got);
            Assert.Equal(brute.Value, got.Cost, 6);
            // What the chosen mix promises: the aim (or more, for a single plan) with its margin.
            double aim = RecallPlanner.Aim(target);
            double mean = got.HighShare * got.High.Recall + (1 - got.HighShare) * got.Low.Recall;
            Assert.True(mean >= aim - 1e-9, $"trial {trial}: the mix predicts {mean}, below the aim {aim}");
            Assert.True(mean - RecallPlanner.StdErrors * got.StdError >= target - 1e-12, $"trial {trial}: the mix keeps no margin");
            Assert.InRange(got.HighShare, 0, 1);
            // Never costlier than the plan chosen before mixes: the first single plan that clears both rules.
            if (plans.FirstOrDefault(p => p.Recall >= aim && p.Recall - RecallPlanner.StdErrors * p.RecallStdError >= target) is { } old)
                Assert.True(got.Cost <= old.Cost + 1e-9);
            if (got.Mixed) mixed++; else single++;
        }
        output.WriteLine($"mixed {mixed}, single {single}, none {none}");
        Assert.True(mixed > 500 && single > 20 && none > 50, $"the random frontiers cover too few cases: mixed {mixed}, single {single}, none {none}");
    }

    /// <summary>
    /// Least mean cost over single plans and every pair below / at-or-above the aim, each keeping the aim and the margin:
    /// per pair a linear programme in the share p, solved by trying its vertices (the aim's share, the margin's, 0 and 1).
    /// </summary>
    private static double? BruteForce(List<CalibratedPlan> plans, double target)
    {
        double aim = RecallPlanner.Aim(target);
        double? best = null;
        foreach (var b in plans.Where(p => p.Recall >= aim))
        {
            if (b.Recall - 2 * b.RecallStdError >= target - 1e-12) best = Math.Min(best ?? double.MaxValue, b.Cost);
            foreach (var a in plans.Where(p => p.Recall < aim))
            {
                double ma = a.Recall - 2 * a.RecallStdError, mb = b.Recall - 2 * b.RecallStdError;
                foreach (double p in new[] { (aim - a.Recall) / (b.Recall - a.Recall), (target - ma) / (mb - ma), 0, 1 })
                {
                    if (!(p >= 0 && p <= 1)) continue;
                    double mean = p * b.Recall + (1 - p) * a.Recall, se = p * b.RecallStdError + (1 - p) * a.RecallStdError;
                    if (mean >= aim - 1e-12 && mean - 2 * se >= target - 1e-12) best = Math.Min(best ?? double.MaxValue, p * b.Cost + (1 - p) * a.Cost);
                }
            }
        }
        return best;
    }

    [Fact]
    public void AQuerysDrawDependsOnItsBytesAndFilterOnlyAndSpreadsEvenly()
    {
        var rng = new Random(3);
        var v = Enumerable.Range(0, 16).Select(_ => (float)rng.NextDouble()).ToArray();
        double d = RecallPlanner.Draw(RecallPlanner.VectorHash(v));
        Assert.Equal(d, RecallPlanner.Draw(RecallPlanner.VectorHash((float[])v.Clone())));
        Assert.InRange(d, 0, Math.BitDecrement(1.0));
        Assert.NotEqual(d, RecallPlanner.Draw(RecallPlanner.VectorHash(v), 17));
        Assert.Equal(RecallPlanner.Draw(RecallPlanner.VectorHash(v), 17), RecallPlanner.Draw(RecallPlanner.VectorHash(v), 17));
        var w = (float[])v.Clone();
        w[5] = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(w[5]) ^ 1); // one bit apart
        Assert.NotEqual(d, RecallPlanner.Draw(RecallPlanner.VectorHash(w)));
        // 20,000 random vectors: each tenth of [0, 1) holds its share within 5 binomial standard errors.
        const int n = 20_000;
        var bins = new int[10];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < v.Length; j++) v[j] = (float)rng.NextDouble();
            bins[(int)(RecallPlanner.Draw(RecallPlanner.VectorHash(v)) * 10)]++;
        }
        foreach (int c in bins) Assert.InRange(c, n / 10 - 5 * Math.Sqrt(n * 0.09), n / 10 + 5 * Math.Sqrt(n * 0.09));
    }

    private const int Dims = 24, Base = 6000, Held = 800, K = 10;

    [Theory]
    [InlineData(0.9)]
    [InlineData(0.99)]
    public void HeldOutQueriesRealiseTheMixAndLandInTheBand(double target)
    {
        const int seed = 21;
        var all = TestData.Clustered(Base + Held, Dims, clusters: 25, seed: seed);
        var (data, queries) = (all[..(Base * Dims)], all[(Base * Dims)..]);
        using var idx = new TestData.TempIndex(data, Base, Dims, new IndexBuildOptions { Partitions = 60, Seed = seed, EnergyKept = 1 }, calibrate: true,
            calibrationSize: 600);
        var mix = RecallPlanner.Mix(idx.Index.Manifest.Calibration!.Plans, target);
        Assert.NotNull(mix);
        double sum = 0;
        int high = 0;
        for (int i = 0; i < Held; i++)
        {
            var q = queries.AsSpan(i * Dims, Dims);
            var got = idx.Engine.Search(q, new SearchOptions { K = K, Recall = target });
            // The same query runs the same plan again.
            var again = idx.Engine.Search(q, new SearchOptions { K = K, Recall = target });
            Assert.Equal(got.Ids, again.Ids);
            Assert.Equal((got.Stats.CentroidFactor, got.Stats.RerankFactor), (again.Stats.CentroidFactor, again.Stats.RerankFactor));
            Assert.Equal(mix.Predicted, got.Stats.PredictedRecall);
            var plan = (got.Stats.CentroidFactor, got.Stats.RerankFactor);
            Assert.True(plan == (mix.High.CentroidFactor, mix.High.RerankFactor) || plan == (mix.Low.CentroidFactor, mix.Low.RerankFactor), $"query {i} ran {plan}");
            if (plan == (mix.High.CentroidFactor, mix.High.RerankFactor)) high++;
            var truth = TestData.BruteForce(data, Base, Dims, q, K, Metric.L2).Select(e => e.Id).ToHashSet();
            sum += got.Ids.Count(truth.Contains) / (double)K;
        }
        double achieved = sum / Held;
        output.WriteLine($"target {target}: low CF {mix.Low.CentroidFactor} R {mix.Low.RerankFactor} ({mix.Low.Recall}), high CF {mix.High.CentroidFactor} R {mix.High.RerankFactor} ({mix.High.Recall}), " +
            $"share {mix.HighShare:F3}, realised {high / (double)Held:F3}, predicted {mix.Predicted}, achieved {achieved:F4}");
        if (mix.Mixed) Assert.InRange(high / (double)Held, mix.HighShare - 4 * Math.Sqrt(mix.HighShare * (1 - mix.HighShare) / Held), mix.HighShare + 4 * Math.Sqrt(mix.HighShare * (1 - mix.HighShare) / Held));
        Assert.InRange(achieved, target, target + 0.02);
    }
}
