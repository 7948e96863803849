using Squash.Index.Build;
using Squash.Index.Model;
using Squash.Storage;

namespace Squash.Search;

/// <summary>
/// The default way to build an index: <see cref="IndexPublisher"/>'s build, then the recall calibration on the
/// written version, published with it (the calibration lives in the manifest, so it is never out of step with the data).
/// </summary>
public static class CalibratedBuild
{
    /// <param name="calibration">Queries to calibrate with; null samples <see cref="RecallCalibrator.DefaultQueries"/> base vectors (leave-one-out).
    /// Pass <paramref name="calibrate"/> false to publish without a calibration (queries then plan with CF and R only).</param>
    public static Task<IndexManifest> BuildAndPublishAsync(
        IndexStore store, float[] vectors, int count, int dims, IndexBuildOptions options,
        IProgress<BuildProgress>? progress = null, CancellationToken cancellationToken = default,
        CalibrationQueries? calibration = null, bool calibrate = true)
    {
        if (!calibrate) return IndexPublisher.BuildAndPublishAsync(store, vectors, count, dims, options, progress, cancellationToken);
        return IndexPublisher.BuildAndPublishAsync(store, vectors, count, dims, options, progress, cancellationToken,
            async (manifest, ct) =>
            {
                progress?.Report(new("calibrate", 0));
                var started = DateTimeOffset.UtcNow;
                var opened = await OpenedIndex.OpenUnpublishedAsync(store, manifest, ct).ConfigureAwait(false);
                var queries = calibration ?? CalibrationQueries.SampleBase(vectors, count, dims, RecallCalibrator.DefaultQueries, options.Seed);
                var fitted = RecallCalibrator.Calibrate(opened, queries, RecallCalibrator.DefaultK,
                    progress is null ? null : new Progress<double>(f => progress.Report(new("calibrate", f))), ct);
                progress?.Report(new("calibrate", 1));
                double seconds = (DateTimeOffset.UtcNow - started).TotalSeconds;
                return manifest with
                {
                    Calibration = fitted,
                    Build = manifest.Build with { BuildSeconds = Math.Round(manifest.Build.BuildSeconds + seconds, 3) },
                };
            });
    }
}
