using Squash.Index.Model;
using Squash.Storage;

namespace Squash.Search.Writes;

/// <summary>
/// Calibrates an index's current version again on the user's queries and filter families, without a rebuild
/// (<c>squash calibrate</c>): for an index built before the user had real queries, or whose traffic changed. The same
/// measurement a build makes with <c>--calibration-queries</c> (the first <see cref="RecallCalibrator.BuildQueries"/>
/// queries, the first <see cref="RecallCalibrator.ExactQueries"/> of them against exact neighbours among the live rows),
/// published as a manifest-only successor of the measured version the way the recalibration after writes is
/// (<see cref="LogIngest.PublishCalibrationOntoCurrentAsync"/>), with the queries and families kept for later measurements.
/// </summary>
public static class UserCalibration
{
    /// <summary>What was measured and what became of it.</summary>
    public sealed record Result(CalibrationRun Run, RecallCalibration Calibration, int Queries);

    /// <summary>Measures the current version on <paramref name="queries"/> and publishes the calibration onto the version current then.</summary>
    /// <exception cref="InvalidOperationException">The index has no calibration to replace (built with --no-calibration, or too small to calibrate).</exception>
    public static async Task<Result> CalibrateCurrentAsync(IndexStore store, CalibrationQueries queries, TimeProvider? clock = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(queries);
        var m = await store.OpenCurrentAsync(ct).ConfigureAwait(false);
        if (m.Calibration is null)
            throw new InvalidOperationException($"version {m.Version} has no recall calibration (built with --no-calibration, or too small to calibrate): rebuild it to calibrate");
        if (queries.Dimensions != m.Dimensions)
            throw new ArgumentException($"the queries have {queries.Dimensions} dimensions; the index has {m.Dimensions}", nameof(queries));
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var opened = await OpenedIndex.OpenUnpublishedAsync(store, m, ct).ConfigureAwait(false);
        var kept = queries.Take(Math.Min(queries.Count, RecallCalibrator.BuildQueries(m.Count)));
        var fitted = IngestRecalibration.MeasureQueries(opened, kept, filtered: true, ct)
            ?? throw new InvalidOperationException($"version {m.Version} is too small to calibrate ({m.Count:N0} vectors)");
        fitted = fitted with { Seconds = Math.Round(watch.Elapsed.TotalSeconds, 3) };
        var run = await LogIngest.PublishCalibrationOntoCurrentAsync(store, m, fitted, clock, ct, keep: kept).ConfigureAwait(false);
        return new Result(run, fitted, kept.Count);
    }
}
