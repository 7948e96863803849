using Squash.Core;
using Squash.Index.Build;

namespace Squash.Search.Tests;

/// <summary>
/// The in-process build's larger calibration: the first queries against exact neighbours, the rest against the index's
/// reference answer, combined by the two-phase estimate; checked against brute force on every query.
/// </summary>
public sealed class CalibrationExactTests
{
    private const int Dims = 24, Base = 6000, Queries = 600, K = 10;

    [Fact]
    public void TheTwoPhaseEstimateMatchesExactRecallOnEveryQueryAndItsErrorIsSmallerThanTheExactQueriesAlone()
    {
        var all = TestData.Clustered(Base + Queries, Dims, clusters: 25, seed: 13);
        var data = all[..(Base * Dims)];
        var calibration = new CalibrationQueries(all[(Base * Dims)..], Queries, Dims, null, "queries");
        using var idx = new TestData.TempIndex(data, Base, Dims, new IndexBuildOptions { Partitions = 40, Seed = 5 }, calibrate: true, calibration,
            exactQueries: RecallCalibrator.DefaultQueries);
        var cal = idx.Index.Manifest.Calibration!;
        Assert.Equal(Queries, cal.Queries);
        var truth = new HashSet<long>[Queries];
        for (int i = 0; i < Queries; i++)
            truth[i] = TestData.BruteForce(data, Base, Dims, calibration.Data.AsSpan(i * Dims, Dims), K, Metric.L2).Select(e => e.Id).ToHashSet();
        int reduced = 0, middle = 0;
        foreach (var plan in cal.Plans)
        {
            var perQuery = new double[Queries];
            for (int i = 0; i < Queries; i++)
            {
                var got = idx.Engine.Search(calibration.Data.AsSpan(i * Dims, Dims), new SearchOptions { K = K, CentroidFactor = plan.CentroidFactor, RerankFactor = plan.RerankFactor });
                perQuery[i] = got.Ids.Count(truth[i].Contains) / (double)K;
            }
            double full = perQuery.Average();
            // The estimate is of these very queries' mean: only the exact half's difference term can be off.
            Assert.True(Math.Abs(plan.Recall - full) <= 2 * plan.RecallStdError + 1e-5,
                $"CF {plan.CentroidFactor} R {plan.RerankFactor}: estimated {plan.Recall} ± {plan.RecallStdError}, exact on all {Queries}: {full:F5}");
            var exactOnly = perQuery[..RecallCalibrator.DefaultQueries];
            double m = exactOnly.Average();
            double plainError = Math.Sqrt(exactOnly.Sum(x => (x - m) * (x - m)) / (exactOnly.Length - 1) / exactOnly.Length);
            if (plan.Recall is >= 0.85 and <= 0.99)
            {
                middle++;
                if (plan.RecallStdError < 0.85 * plainError) reduced++;
            }
        }
        Assert.True(middle > 0, "no frontier plan between 0.85 and 0.99");
        Assert.True(reduced == middle, $"{reduced} of {middle} plans between 0.85 and 0.99 have a smaller error than 300 exact queries alone give");
    }

    [Fact]
    public void WithTheReferenceEqualToTheTruthTheTwoPhaseEstimateIsThePlainMean()
    {
        var rng = new Random(3);
        var recall = new double[50, 1];
        for (int q = 0; q < 50; q++) recall[q, 0] = rng.Next(11) / 10.0;
        var (mean, se) = RecallCalibrator.TwoPhase(recall, recall)[0];
        double m = Enumerable.Range(0, 50).Average(q => recall[q, 0]);
        double s = Math.Sqrt(Enumerable.Range(0, 50).Sum(q => (recall[q, 0] - m) * (recall[q, 0] - m)) / 49 / 50);
        Assert.Equal(m, mean, 12);
        Assert.Equal(s, se, 12);
        // A reference that is off by a constant on every query is corrected exactly, with no added error.
        var shifted = new double[50, 1];
        for (int q = 0; q < 50; q++) shifted[q, 0] = recall[q, 0] - 0.25;
        (mean, se) = RecallCalibrator.TwoPhase(Sub(recall, 20), shifted)[0];
        Assert.Equal(m, mean, 12);
        Assert.Equal(s, se, 12);
    }

    private static double[,] Sub(double[,] a, int n)
    {
        var b = new double[n, a.GetLength(1)];
        for (int i = 0; i < n; i++) for (int j = 0; j < a.GetLength(1); j++) b[i, j] = a[i, j];
        return b;
    }

    [Theory]
    [InlineData(60_000, 1_000, 300, 42)]
    [InlineData(1_000_000, 1_000, 300, 7)]
    [InlineData(5_000, 500, 300, 1)]
    public void CalibrationRowsStartWithTheDefaultSampleAndContinueTheSameDraw(int count, int size, int head, int seed)
    {
        var rows = CalibrationQueries.CalibrationRows(count, size, head, seed);
        Assert.Equal(CalibrationQueries.SampleRows(count, head, seed), rows[..head]);
        Assert.Equal(CalibrationQueries.SampleRows(count, size, seed), rows.Order().ToArray());
        var shuffled = Enumerable.Range(0, count).ToArray();
        new Random(seed).Shuffle(shuffled);
        Assert.Equal(shuffled[head..size], rows[head..]);
    }

    [Theory]
    [InlineData(199, null, 0)]
    [InlineData(2_000, 200, 200)]
    [InlineData(20_000, 300, 300)]
    [InlineData(60_000, 750, 750)]
    [InlineData(120_000, 1_200, 1_000)]
    [InlineData(240_000, 1_200, 500)]
    [InlineData(1_000_000, 1_200, 300)]
    [InlineData(50_000_000, 1_200, 300)]
    public void ABuildCalibratesOnOneRowPerEightyVectorsBetweenThreeHundredAndTwelveHundredAndAtMostATenthExactWhileABruteForceIsCheap(
        int count, int? expected, int exact)
    {
        var rows = CalibratedBuild.CalibrationRows(count, seed: 42);
        Assert.Equal(expected, rows?.Length);
        if (rows is null) return;
        Assert.Equal(exact, RecallCalibrator.ExactQueries(count, rows.Length));
        // The exactly measured rows (which most filtered families filter too) come first: a seeded draw of their own, ascending.
        Assert.Equal(CalibrationQueries.SampleRows(count, exact, 42), rows[..exact]);
    }
}
