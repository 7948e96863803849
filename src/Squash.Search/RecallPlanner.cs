using Squash.Index.Model;

namespace Squash.Search;

/// <summary>
/// Turns a recall target into a plan with the index's build-time calibration: the cheapest calibrated plan whose
/// measured recall, less <see cref="StdErrors"/> standard errors, reaches the target and that aims inside the promised
/// band (<see cref="Aim"/>), or a mix of two adjacent plans that aims there exactly at less cost (<see cref="Mix"/>). A
/// target no calibrated plan reaches, or 1, is answered exactly. An index without a calibration keeps the given CF and R.
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
    /// The options to plan with (Recall cleared, CF and R set, and a filtered plan's margin when it has its own), and the
    /// calibration's predicted recall for them. An unfiltered query plans with the frontier measured for its k
    /// (<see cref="FrontierFor"/>). A filtered
    /// query passes its estimated <paramref name="selectivity"/>: it plans with the frontier of the filtered band that holds
    /// it (the nearest band on a log scale when none does), or the unfiltered frontier on an index without filtered bands.
    /// A target between two frontier plans is met by a mix of them (<see cref="Mix"/>): <paramref name="draw"/>, the query's
    /// place in [0, 1) (<see cref="Draw"/>), picks which plan this query runs; <paramref name="share"/> is the share of
    /// queries the mix sends to that plan (null when one plan serves every query), and <paramref name="predicted"/> the
    /// mix's predicted recall.
    /// </summary>
    /// <param name="anchorRatio">A filtered query's <see cref="SearchEngine.FilteredAnchors.AnchorRatio"/>: picks between bands split by it.</param>
    public static SearchOptions Resolve(RecallCalibration? calibration, SearchOptions options, out double? predicted, out double? share,
        double? selectivity = null, double anchorRatio = 1, double draw = 0)
    {
        ArgumentNullException.ThrowIfNull(options);
        predicted = options.Exact ? 1 : null;
        share = null;
        if (options.Recall is not { } target || options.Exact) return options with { Recall = null };
        if (target >= 1)
        {
            predicted = 1;
            return options with { Recall = null, Exact = true };
        }
        if (calibration is null) return options with { Recall = null };
        var plans = selectivity is { } s && BandFor(BandsFor(calibration, options.K), s, anchorRatio) is { } band ? band.Plans : FrontierFor(calibration, options.K);
        if (MixFor(plans, target) is not { } mix)
        {
            predicted = 1;
            return options with { Recall = null, Exact = true };
        }
        var plan = mix.PlanFor(draw);
        predicted = mix.Predicted;
        share = mix.Mixed ? (ReferenceEquals(plan, mix.High) ? mix.HighShare : 1 - mix.HighShare) : null;
        return options with { Recall = null, CentroidFactor = plan.CentroidFactor, RerankFactor = plan.RerankFactor,
            FilterMargin = plan.FilterMargin ?? options.FilterMargin, MaxPartitions = plan.MaxPartitions };
    }

    /// <summary><see cref="Resolve(RecallCalibration?, SearchOptions, out double?, out double?, double?, double, double)"/> without the share.</summary>
    public static SearchOptions Resolve(RecallCalibration? calibration, SearchOptions options, out double? predicted, double? selectivity = null,
        double anchorRatio = 1, double draw = 0) =>
        Resolve(calibration, options, out predicted, out _, selectivity, anchorRatio, draw);

    /// <summary>
    /// The unfiltered frontier a query of <paramref name="k"/> neighbours plans with: of the calibration's own (recall@K) and
    /// those it measured at other K, the one of the smallest K ≥ k, else the largest K's.
    /// </summary>
    public static IReadOnlyList<CalibratedPlan> FrontierFor(RecallCalibration calibration, int k) => MeasuredFor(calibration, k).Plans;

    /// <summary>
    /// The filtered bands a filtered query of <paramref name="k"/> neighbours plans with, chosen as <see cref="FrontierFor"/>
    /// chooses among the unfiltered frontiers: of the calibration's own (<see cref="RecallCalibration.Filtered"/>) and those
    /// measured at other K (<see cref="RecallCalibration.FilteredByK"/>). Null on an index without filtered bands.
    /// </summary>
    public static IReadOnlyList<FilteredCalibration>? BandsFor(RecallCalibration calibration, int k) => BandsMeasuredFor(calibration, k).Bands;

    /// <summary>
    /// The K whose recall the plans a query of <paramref name="k"/> neighbours plans with were measured at: the unfiltered
    /// frontier's (<see cref="FrontierFor"/>), or with <paramref name="filtered"/> on an index with filtered bands, theirs (<see cref="BandsFor"/>).
    /// </summary>
    public static int CalibratedK(RecallCalibration calibration, int k, bool filtered = false) =>
        filtered && calibration?.Filtered is not null ? BandsMeasuredFor(calibration, k).K : MeasuredFor(calibration!, k).K;

    /// <summary>
    /// The K of the recall <see cref="Resolve(RecallCalibration?, SearchOptions, out double?, out double?, double?, double, double)"/>
    /// predicts for these arguments: a filtered band's (the calibration's K), else <see cref="CalibratedK"/>; null when it
    /// predicts nothing or the exact plan.
    /// </summary>
    public static int? PredictedAtK(RecallCalibration? calibration, SearchOptions resolved, double? predicted, int k, double? selectivity = null, double anchorRatio = 1)
    {
        ArgumentNullException.ThrowIfNull(resolved);
        if (calibration is null || predicted is null || resolved.Exact) return null;
        return CalibratedK(calibration, k, filtered: selectivity is { } s && BandFor(calibration.Filtered, s, anchorRatio) is not null);
    }

    private static (int K, IReadOnlyList<CalibratedPlan> Plans) MeasuredFor(RecallCalibration calibration, int k)
    {
        ArgumentNullException.ThrowIfNull(calibration);
        return Nearest((calibration.K, calibration.Plans), (calibration.ByK ?? []).Select(atK => (atK.K, atK.Plans)), k);
    }

    private static (int K, IReadOnlyList<FilteredCalibration>? Bands) BandsMeasuredFor(RecallCalibration calibration, int k)
    {
        ArgumentNullException.ThrowIfNull(calibration);
        if (calibration.Filtered is null) return (calibration.K, null);
        return Nearest<IReadOnlyList<FilteredCalibration>?>((calibration.K, calibration.Filtered), (calibration.FilteredByK ?? []).Select(atK => (atK.K, (IReadOnlyList<FilteredCalibration>?)atK.Bands)), k);
    }

    /// <summary>Of <paramref name="own"/> and <paramref name="others"/>, the one measured at the smallest K ≥ <paramref name="k"/>, else at the largest K.</summary>
    private static (int K, T Measured) Nearest<T>((int K, T Measured) own, IEnumerable<(int K, T Measured)> others, int k)
    {
        var best = own;
        foreach (var atK in others)
            if (best.K < k ? atK.K > best.K : atK.K >= k && atK.K < best.K) best = atK;
        return best;
    }

    /// <summary>
    /// Two frontier plans run on complementary shares of the queries: <see cref="High"/> on <see cref="HighShare"/> of them,
    /// <see cref="Low"/> on the rest (one plan when they are the same).
    /// </summary>
    public sealed record PlanMix(CalibratedPlan Low, CalibratedPlan High, double HighShare)
    {
        public bool Mixed => !ReferenceEquals(Low, High) && HighShare < 1;
        /// <summary>The mean recall the calibration predicts over queries drawn like its own.</summary>
        public double Predicted => Math.Round(HighShare * High.Recall + (1 - HighShare) * Low.Recall, 5);
        /// <summary>
        /// A standard error no smaller than the mix's: the share-weighted sum of the two plans' (their errors are measured on
        /// the same queries and correlated, so the sum is the bound that holds whatever the correlation).
        /// </summary>
        public double StdError => HighShare * High.RecallStdError + (1 - HighShare) * Low.RecallStdError;
        /// <summary>The mean cost per query.</summary>
        public double Cost => MixCost(Low, High, HighShare);
        /// <summary>The plan a query at <paramref name="draw"/> in [0, 1) runs.</summary>
        public CalibratedPlan PlanFor(double draw) => draw < HighShare ? High : Low;
    }

    // The choice depends only on the frontier and the target: memoised per frontier (frontiers are immutable manifest
    // records), so a query pays for it once per index and target.
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<IReadOnlyList<CalibratedPlan>, System.Collections.Concurrent.ConcurrentDictionary<double, PlanMix?>> Mixes = new();

    private static PlanMix? MixFor(IReadOnlyList<CalibratedPlan> plans, double target) =>
        Mixes.GetValue(plans, _ => new()).GetOrAdd(target, t => Mix(plans, t));

    /// <summary>
    /// The cheapest way to aim a target with <paramref name="plans"/> (a frontier): a single plan B whose recall reaches
    /// <see cref="Aim"/> and whose recall less <see cref="StdErrors"/> standard errors reaches the target (the plan chosen
    /// before mixes existed: the first such), or a pair A below the aim and B at or above it, B run on a share p of the
    /// queries: p = (aim − r_A) / (r_B − r_A), so that the mix predicts the aim exactly, or more where the mix's
    /// <see cref="PlanMix.StdError"/> needs it to keep the same margin (both the mix's recall and its recall less the
    /// margin are linear in p, so the shares that satisfy both form an interval and the cheapest is its end); of all, the
    /// least mean cost (an edge of the frontier's lower convex hull where the margin does not bind). A discrete frontier's
    /// single plan often lies well above the aim, and achieved recall then overshoots the band. Null: no plan reaches the
    /// target (the query goes exact).
    /// </summary>
    public static PlanMix? Mix(IReadOnlyList<CalibratedPlan> plans, double target)
    {
        ArgumentNullException.ThrowIfNull(plans);
        double aim = Aim(target);
        // The calibration asks this for thousands of targets per band (FilteredRecallCalibrator.BothSides): candidates are
        // compared by cost as PlanMix.Cost computes it, and only the best is built.
        var list = plans as CalibratedPlan[] ?? plans.ToArray();
        CalibratedPlan? bestLow = null, bestHigh = null;
        double bestShare = 0, bestCost = double.PositiveInfinity;
        for (int bi = 0; bi < list.Length; bi++)
        {
            var b = list[bi];
            if (b.Recall < aim) continue;
            double bMargin = b.Recall - StdErrors * b.RecallStdError;
            if (bMargin >= target && (bestHigh is null || b.Cost < bestCost)) (bestLow, bestHigh, bestShare, bestCost) = (b, b, 1, b.Cost);
            for (int ai = 0; ai < list.Length; ai++)
            {
                var a = list[ai];
                if (a.Recall >= aim) continue;
                double lo = (aim - a.Recall) / (b.Recall - a.Recall), hi = 1;
                double aMargin = a.Recall - StdErrors * a.RecallStdError, slope = bMargin - aMargin;
                if (slope > 0) lo = Math.Max(lo, (target - aMargin) / slope);
                else if (slope < 0) hi = Math.Min(hi, (target - aMargin) / slope);
                else if (aMargin < target) continue;
                if (lo > hi) continue;
                double share = b.Cost >= a.Cost ? lo : hi, cost = MixCost(a, b, share);
                if (bestHigh is null || cost < bestCost) (bestLow, bestHigh, bestShare, bestCost) = (a, b, share, cost);
            }
        }
        return bestHigh is null ? null : new PlanMix(bestLow!, bestHigh, bestShare);
    }

    /// <summary><see cref="PlanMix.Cost"/> of a mix not built.</summary>
    private static double MixCost(CalibratedPlan low, CalibratedPlan high, double highShare) => highShare * high.Cost + (1 - highShare) * low.Cost;

    /// <summary>
    /// A query's place in [0, 1) for <see cref="PlanMix.PlanFor"/>, from <see cref="VectorHash"/> of its vector and its
    /// filter's <see cref="Filters.CompiledFilter.Key"/> (0: none): the same query (a retry, a test, another instance) always
    /// runs the same plan, while queries drawn like the data spread evenly and realise the mix's shares on average.
    /// </summary>
    public static double Draw(ulong vectorHash, ulong filterKey = 0)
    {
        ulong h = filterKey == 0 ? vectorHash : Scramble(vectorHash ^ Scramble(filterKey));
        return HashDraw.UnitInterval(h);
    }

    /// <summary>A hash of the query vector's bytes as sent.</summary>
    public static ulong VectorHash(ReadOnlySpan<float> query) =>
        System.IO.Hashing.XxHash3.HashToUInt64(System.Runtime.InteropServices.MemoryMarshal.AsBytes(query));

    // SplitMix64's finaliser: every input bit moves every output bit.
    private static ulong Scramble(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
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
