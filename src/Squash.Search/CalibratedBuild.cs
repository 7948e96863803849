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
    /// <summary>
    /// The base-sample rows a build of <paramref name="count"/> vectors calibrates on (null below
    /// <see cref="RecallCalibrator.MinimumVectors"/>): <see cref="RecallCalibrator.BuildQueries"/> of them (at most a
    /// tenth), the first <see cref="RecallCalibrator.ExactQueries"/> (or <paramref name="exactQueries"/>) ascending: the
    /// rows measured exactly, which most filtered families filter too; the rest in the order drawn. A queue build holds
    /// out the same rows, so the same file and seed give the same index either way.
    /// </summary>
    public static int[]? CalibrationRows(int count, int seed, int? sampleSize = null, int? exactQueries = null)
    {
        if (count < RecallCalibrator.MinimumVectors) return null;
        int size = Math.Min(sampleSize ?? RecallCalibrator.BuildQueries(count), count / 10);
        return CalibrationQueries.CalibrationRows(count, size, exactQueries ?? RecallCalibrator.ExactQueries(count, size), seed);
    }

    /// <param name="calibration">Queries to calibrate with; null samples <paramref name="sampleSize"/> base vectors (at most a tenth), held out of the partitioning and searched leave-one-out
    /// (the first <see cref="RecallCalibrator.ExactQueries"/> against exact neighbours, the rest against the index's deep answer).</param>
    /// <param name="sampleSize">Base-sample rows; null: <see cref="RecallCalibrator.BuildQueries"/> for <paramref name="count"/>.</param>
    /// <param name="calibrate">False: publish without a calibration (queries then plan with CF and R only).</param>
    /// <param name="exactQueries">Queries measured against exact neighbours; null: <see cref="RecallCalibrator.ExactQueries"/>.</param>
    public static Task<IndexManifest> BuildAndPublishAsync(
        IndexStore store, float[] vectors, int count, int dims, IndexBuildOptions options,
        IProgress<BuildProgress>? progress = null, CancellationToken cancellationToken = default,
        CalibrationQueries? calibration = null, bool calibrate = true, int? sampleSize = null, int? exactQueries = null)
    {
        if (!calibrate) return IndexPublisher.BuildAndPublishAsync(store, vectors, count, dims, options, progress, cancellationToken);
        // Base-sample queries are held out of the partitioning: leave-one-out on rows the partitions were fitted to
        // measured a recall real queries did not get.
        int[]? heldOut = calibration is null ? CalibrationRows(count, options.Seed, sampleSize, exactQueries) : null;
        if (heldOut is not null) options = options with { HeldOutRows = heldOut };
        return IndexPublisher.BuildAndPublishAsync(store, vectors, count, dims, options, progress, cancellationToken,
            async (manifest, ct) =>
            {
                progress?.Report(new("calibrate", 0));
                var started = DateTimeOffset.UtcNow;
                var opened = await OpenedIndex.OpenUnpublishedAsync(store, manifest, ct).ConfigureAwait(false);
                var queries = calibration ?? CalibrationQueries.FromRows(vectors, dims, heldOut ?? []);
                var fitted = RecallCalibrator.Calibrate(opened, vectors, queries, RecallCalibrator.DefaultK,
                    progress is null ? null : new Progress<double>(f => progress.Report(new("calibrate", f))), ct, exactQueries);
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
