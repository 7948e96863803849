using Squash.Index.Model;
using Squash.Search.Filters;

namespace Squash.Search.Tests;

/// <summary>
/// A selectivity band split by anchor ratio: a family with queries on both sides (another class's label, most of whose
/// queries lie above the split) runs the lower band's plans below it, and what a target promises is the family's mean
/// over both sides. Synthetic measurements (no index), so the planner's choice can be checked against known means.
/// </summary>
public class FilteredBandsBothSidesTests
{
    private const double Split = FilteredRecallCalibrator.SplitAnchorRatio;

    /// <summary>
    /// Per-query recall that rises with the plan's CF column and R: <paramref name="scale"/> sets how hard the queries are
    /// (recall 1 − scale·e^(−column/9) at R 1, a little more at larger R), with a spread from query to query of half the misses either way.
    /// </summary>
    private static (double[,] Recall, double[,] Cost) Plans(int queries, double scale)
    {
        int grid = FilteredRecallCalibrator.Columns, plans = grid * RecallCalibrator.RerankFactors.Length;
        var recall = new double[queries, plans];
        var cost = new double[queries, plans];
        for (int q = 0; q < queries; q++)
            for (int j = 0; j < plans; j++)
            {
                int g = j % grid, r = j / grid;
                double mean = 1 - scale * Math.Exp(-g / 9.0) * (1 - 0.05 * r);
                recall[q, j] = mean + (q % 2 == 0 ? 0.5 : -0.5) * (1 - mean);
                cost[q, j] = (1 + g) * (1 + 0.3 * r);
            }
        return (recall, cost);
    }

    /// <summary>A family of <paramref name="below"/> queries under the split (recall scale <paramref name="hardBelow"/>) and <paramref name="above"/> over it.</summary>
    private static FilteredRecallCalibrator.FamilyMeasurement Family(string name, int below, double hardBelow, int above, double hardAbove)
    {
        int n = below + above;
        var (rb, cb) = Plans(below, hardBelow);
        var (ra, ca) = Plans(above, hardAbove);
        int plans = rb.GetLength(1);
        var recall = new double[n, plans];
        var cost = new double[n, plans];
        var ratio = new double[n];
        for (int q = 0; q < n; q++)
        {
            bool low = q < below;
            ratio[q] = low ? 1.1 : 2;
            for (int j = 0; j < plans; j++)
                (recall[q, j], cost[q, j]) = low ? (rb[q, j], cb[q, j]) : (ra[q - below, j], ca[q - below, j]);
        }
        return new FilteredRecallCalibrator.FamilyMeasurement(name, new CompiledFilter?[n], Enumerable.Repeat(0.1, n).ToArray(), recall, cost)
        {
            AnchorRatio = ratio,
        };
    }

    /// <summary>A family's mean recall when each side runs its band's plan for <paramref name="target"/>, from the measurement itself.</summary>
    private static double FamilyMean(FilteredRecallCalibrator.FamilyMeasurement family, IReadOnlyList<FilteredCalibration> bands, double target)
    {
        double sum = 0;
        for (int q = 0; q < family.Selectivity.Length; q++)
        {
            var band = RecallPlanner.BandFor(bands, family.Selectivity[q], family.RatioOf(q))!;
            var mix = RecallPlanner.Mix(band.Plans, target)!;
            sum += mix.HighShare * family.Recall[q, Index(mix.High)] + (1 - mix.HighShare) * family.Recall[q, Index(mix.Low)];
        }
        return sum / family.Selectivity.Length;
    }

    private static int Index(CalibratedPlan plan)
    {
        int grid = FilteredRecallCalibrator.Columns;
        for (int g = 0; g < grid; g++)
            if (FilteredRecallCalibrator.Column(g) == (plan.CentroidFactor, plan.FilterMargin))
                return Array.IndexOf(RecallCalibrator.RerankFactors, plan.RerankFactor) * grid + g;
        throw new InvalidOperationException($"no grid column for CF {plan.CentroidFactor}, margin {plan.FilterMargin}");
    }

    /// <summary>
    /// The own label lies below the split and sets the lower band's plans; another label, easier on the whole, has a
    /// quarter of its queries below the split, much harder than the own label's. Each family's mean over both sides reaches its target's aim, within the
    /// targets' grid step, at 0.9, 0.95 and 0.99; the band above the split asks more than its own queries need. Before,
    /// the band above took its own queries' mean alone, and the other label missed its target.
    /// </summary>
    [Fact]
    public void EachFamilysMeanOverBothSidesReachesTheAim()
    {
        var own = Family("own value", 600, 0.7, 0, 0.7);
        var other = Family("other value", 200, 1.0, 600, 0.5);
        var bands = FilteredRecallCalibrator.Bands([other, own])!;
        Assert.Equal([(0.0, (double?)Split), (Split, null)], bands.Select(b => (b.MinAnchorRatio!.Value, b.MaxAnchorRatio)));
        var above = bands[1];
        foreach (double target in new[] { 0.9, 0.95, 0.99 })
        {
            double aim = RecallPlanner.Aim(target);
            foreach (var family in new[] { own, other })
            {
                double mean = FamilyMean(family, bands, target);
                Assert.True(mean >= aim - 0.001 && mean <= aim + 0.006,
                    $"target {target}: {family.Name}'s mean over both sides {mean:F4}, aim {aim:F4}");
            }
            // The band above the split asks more of its plans than its own queries' mean would: the other label's queries
            // below the split reach less than the aim under the lower band's plan (by little at 0.99).
            if (target > 0.95) continue;
            var mix = RecallPlanner.Mix(above.Plans, target)!;
            double aboveOnly = Enumerable.Range(200, 600).Average(q =>
                mix.HighShare * other.Recall[q, Index(mix.High)] + (1 - mix.HighShare) * other.Recall[q, Index(mix.Low)]);
            Assert.True(aboveOnly > aim + 0.004, $"target {target}: the other label's queries above the split reach {aboveOnly:F4}, aim {aim:F4}");
        }
    }

    /// <summary>A family with every query above the split keeps its own mean there: nothing below to make up for.</summary>
    [Fact]
    public void AFamilyAboveTheSplitAloneKeepsItsOwnMean()
    {
        var own = Family("own value", 600, 0.7, 0, 0.7);
        var other = Family("other value", 0, 1.0, 600, 0.5);
        var bands = FilteredRecallCalibrator.Bands([other, own])!;
        var above = bands.Single(b => b.MinAnchorRatio == Split);
        var means = other.MeanOfEvery(q => other.RatioOf(q) >= Split);
        foreach (var plan in above.Plans)
            Assert.Equal(Math.Round(means[Index(plan)].Recall, 5), plan.Recall);
    }
}
