using Squash.Core;
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
    public static async Task<IndexManifest> BuildAndPublishAsync(
        IndexStore store, float[] vectors, int count, int dims, IndexBuildOptions options,
        IProgress<BuildProgress>? progress = null, CancellationToken cancellationToken = default,
        CalibrationQueries? calibration = null, bool calibrate = true, int? sampleSize = null, int? exactQueries = null)
    {
        if (!calibrate) return await IndexPublisher.BuildAndPublishAsync(store, vectors, count, dims, options, progress, cancellationToken).ConfigureAwait(false);
        // Checked before the build starts, since the exact neighbours start with it.
        options.Validate(count, dims);
        if (vectors.LongLength < (long)count * dims) throw new ArgumentException("vector buffer is shorter than count × dims");
        if (calibration is not null && calibration.Dimensions != dims)
            throw new ArgumentException($"calibration queries have {calibration.Dimensions} dimensions; the index has {dims}", nameof(calibration));
        // Base-sample queries are held out of the partitioning: leave-one-out on rows the partitions were fitted to
        // measured a recall real queries did not get.
        int[]? heldOut = calibration is null ? CalibrationRows(count, options.Seed, sampleSize, exactQueries) : null;
        if (heldOut is not null) options = options with { HeldOutRows = heldOut };
        var queries = calibration ?? CalibrationQueries.FromRows(vectors, dims, heldOut ?? []);
        const int k = RecallCalibrator.DefaultK;
        using var exact = count < Math.Max(RecallCalibrator.MinimumVectors, 2 * k) || queries.Count == 0 ? null
            : StartExactNeighbours(vectors, count, dims, options.Metric, queries.Take(exactQueries ?? RecallCalibrator.ExactQueries(count, queries.Count)), k, cancellationToken);
        return await IndexPublisher.BuildAndPublishAsync(store, vectors, count, dims, options, progress, cancellationToken,
            async (manifest, ct) =>
            {
                if (exact is null) return manifest;
                progress?.Report(new("calibrate", 0));
                var started = DateTimeOffset.UtcNow;
                // The raw vectors are this build's input, mapped as the build mapped them: only codes and attributes are read back.
                var space = new MetricSpace(MetricSpace.Parse(manifest.Metric), manifest.Dimensions, manifest.MaxNorm);
                var opened = await OpenedIndex.OpenUnpublishedAsync(store, manifest, ct, vectorsOf: codes => InputVectors(codes, vectors, space))
                    .ConfigureAwait(false);
                var fitted = RecallCalibrator.Calibrate(opened, await exact.FinishAsync(ct).ConfigureAwait(false), queries, k,
                    progress is null ? null : new Progress<double>(f => progress.Report(new("calibrate", f))), ct);
                progress?.Report(new("calibrate", 1));
                double seconds = (DateTimeOffset.UtcNow - started).TotalSeconds;
                return manifest with
                {
                    Calibration = fitted,
                    Build = manifest.Build with { BuildSeconds = Math.Round(manifest.Build.BuildSeconds + seconds, 3) },
                };
            }).ConfigureAwait(false);
    }

    /// <summary>
    /// A partition's raw vectors from the build's input: its rows (by the codes' row ids) in the index's internal space,
    /// which under L2 is the input itself (a view, nothing copied).
    /// </summary>
    public static PartitionVectors InputVectors(PartitionCodes codes, float[] vectors, MetricSpace space)
    {
        int dims = space.InputDimensions, d = space.InternalDimensions;
        if (space.Metric == Metric.L2) return PartitionVectors.View(vectors, codes.Ids, dims);
        var data = new float[(long)codes.Count * d];
        for (int i = 0; i < codes.Count; i++)
            space.MapStored(vectors.AsSpan(codes.Ids[i] * dims, dims), data.AsSpan(i * d, d));
        return new PartitionVectors { Count = codes.Count, Dimensions = d, Data = data, RowsPerBlock = PartitionVectors.RowsPerBlockFor(d) };
    }

    /// <summary>The measured queries' exact neighbours (each base-sample query left out of its own), begun as the build begins.</summary>
    private static ExactNeighboursDuringBuild StartExactNeighbours(float[] vectors, int count, int dims, Squash.Core.Metric metric,
        CalibrationQueries measured, int k, CancellationToken cancellationToken)
    {
        long stored = (long)count * dims;
        var baseSet = new Squash.Core.Vectors.VectorSet(vectors.LongLength == stored ? vectors : vectors[..(int)stored], count, dims);
        return new ExactNeighboursDuringBuild(baseSet, new(measured.Data, measured.Count, dims), k, metric, measured.SelfIds, cancellationToken);
    }
}
