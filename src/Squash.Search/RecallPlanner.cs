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

    /// <summary>The options to plan with (Recall cleared, CF and R set), and the calibration's predicted recall for them.</summary>
    public static SearchOptions Resolve(RecallCalibration? calibration, SearchOptions options, out double? predicted)
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
        foreach (var plan in calibration.Plans)
        {
            if (plan.Recall - StdErrors * plan.RecallStdError < target || plan.Recall < Aim(target)) continue;
            predicted = plan.Recall;
            return options with { Recall = null, CentroidFactor = plan.CentroidFactor, RerankFactor = plan.RerankFactor };
        }
        predicted = 1;
        return options with { Recall = null, Exact = true };
    }
}
