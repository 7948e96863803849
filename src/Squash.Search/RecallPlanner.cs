using Squash.Index.Model;

namespace Squash.Search;

/// <summary>
/// Turns a recall target into a plan with the index's build-time calibration: the cheapest calibrated plan whose
/// measured recall, less <see cref="StdErrors"/> standard errors, reaches the target and that aims inside the promised
/// band (<see cref="Aim"/>). A target no calibrated plan reaches, or 1, is answered exactly. An index without a
/// calibration keeps the given CF and R.
/// </summary>
public static class RecallPlanner
{
    /// <summary>
    /// The safety margin in standard errors of the calibration's mean: a few hundred queries measure recall to a few
    /// thousandths, and the planner must not pick a plan that reaches the target only by the luck of the sample.
    /// </summary>
    public const double StdErrors = 2;

    /// <summary>
    /// The calibrated recall a plan must show for <paramref name="target"/>: the middle of the band [target, target + 0.02]
    /// a target promises, or halfway to 1 where the band is narrower: at most half the misses the target allows.
    /// Calibration queries are base vectors, and new queries miss more often than they do by a share of the misses
    /// (measured up to ×1.75 near 0.99), which a fixed number of standard errors does not cover when misses are rare.
    /// </summary>
    public static double Aim(double target) => target + Math.Min(0.01, 0.5 * (1 - target));

    /// <summary>
    /// The options to plan with (Recall cleared, CF and R set), and the calibration's predicted recall for them. A filtered
    /// query passes its estimated <paramref name="selectivity"/>: it plans with the frontier of the filtered band that holds
    /// it (the nearest band on a log scale when none does), or the unfiltered frontier on an index without filtered bands.
    /// </summary>
    /// <param name="anchorRatio">A filtered query's <see cref="SearchEngine.FilteredAnchors.AnchorRatio"/>: picks between bands split by it.</param>
    public static SearchOptions Resolve(RecallCalibration? calibration, SearchOptions options, out double? predicted, double? selectivity = null, double anchorRatio = 1)
    {
        ArgumentNullException.ThrowIfNull(options);
        predicted = options.Exact ? 1 : null;
        if (options.Recall is not { } target || options.Exact) return options with { Recall = null };
        if (target >= 1)
        {
            predicted = 1;
            return options with { Recall = null, Exact = true };
        }
        if (calibration is null) return options with { Recall = null };
        var plans = selectivity is { } s && BandFor(calibration.Filtered, s, anchorRatio) is { } band ? band.Plans : calibration.Plans;
        foreach (var plan in plans)
        {
            if (plan.Recall - StdErrors * plan.RecallStdError < target || plan.Recall < Aim(target)) continue;
            predicted = plan.Recall;
            return options with { Recall = null, CentroidFactor = plan.CentroidFactor, RerankFactor = plan.RerankFactor };
        }
        predicted = 1;
        return options with { Recall = null, Exact = true };
    }

    /// <summary>
    /// The band holding <paramref name="selectivity"/>, else the nearest one in log(selectivity); among bands of one
    /// selectivity split by anchor ratio, the one holding <paramref name="anchorRatio"/>. Null without bands.
    /// </summary>
    public static FilteredCalibration? BandFor(IReadOnlyList<FilteredCalibration>? bands, double selectivity, double anchorRatio = 1)
    {
        if (bands is not { Count: > 0 }) return null;
        double s = Math.Clamp(selectivity, 1e-9, 1);
        FilteredCalibration? nearest = null;
        double best = double.PositiveInfinity;
        foreach (var band in bands)
        {
            double gap = s >= band.MinSelectivity && (s < band.MaxSelectivity || band.MaxSelectivity >= 1) ? 0
                : s < band.MinSelectivity ? Math.Log(band.MinSelectivity / s) : Math.Log(s / band.MaxSelectivity);
            if (gap < best || (gap == best && band.HoldsRatio(anchorRatio) && nearest?.HoldsRatio(anchorRatio) != true)) { best = gap; nearest = band; }
        }
        return nearest;
    }
}
