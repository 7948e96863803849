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

    /// <summary>
    /// Starts a calibrated build's own work before the build: its queries (held-out base rows, or
    /// <paramref name="calibration"/>) and their exact neighbours, on a thread that takes only idle time. Everything it
    /// needs is the vectors, so a caller that has more input to read (attributes) starts it first and gives it the core
    /// that reading leaves idle. Pass it to <see cref="BuildAndPublishAsync"/> with the same vectors and options.
    /// </summary>
    /// <param name="calibration">Queries to calibrate with; null samples <paramref name="sampleSize"/> base vectors (at most a tenth), held out of the partitioning and searched leave-one-out
    /// (the first <see cref="RecallCalibrator.ExactQueries"/> against exact neighbours, the rest against the index's deep answer).</param>
    /// <param name="sampleSize">Base-sample rows; null: <see cref="RecallCalibrator.BuildQueries"/> for <paramref name="count"/>.</param>
    /// <param name="exactQueries">Queries measured against exact neighbours; null: <see cref="RecallCalibrator.ExactQueries"/>.</param>
    public static CalibrationStart StartCalibration(float[] vectors, int count, int dims, Metric metric, int seed,
        CalibrationQueries? calibration = null, int? sampleSize = null, int? exactQueries = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(vectors);
        if (count < 0 || dims <= 0) throw new ArgumentException($"{count} vectors of {dims} dimensions");
        if (vectors.LongLength < (long)count * dims) throw new ArgumentException("vector buffer is shorter than count × dims");
        if (calibration is not null && calibration.Dimensions != dims)
            throw new ArgumentException($"calibration queries have {calibration.Dimensions} dimensions; the index has {dims}", nameof(calibration));
        // Base-sample queries are held out of the partitioning: leave-one-out on rows the partitions were fitted to
        // measured a recall real queries did not get.
        int[]? heldOut = calibration is null ? CalibrationRows(count, seed, sampleSize, exactQueries) : null;
        var queries = calibration ?? CalibrationQueries.FromRows(vectors, dims, heldOut ?? []);
        const int k = RecallCalibrator.DefaultK;
        int measured = exactQueries ?? RecallCalibrator.ExactQueries(count, queries.Count);
        var exact = count < Math.Max(RecallCalibrator.MinimumVectors, 2 * k) || queries.Count == 0 ? null
            : StartExactNeighbours(vectors, count, dims, metric, queries.Take(measured), RecallCalibrator.ExactDepth, cancellationToken);
        return new CalibrationStart(vectors, count, dims, metric, seed, heldOut, queries, measured, exact);
    }

    /// <param name="calibration">Queries to calibrate with (see <see cref="StartCalibration"/>).</param>
    /// <param name="sampleSize">Base-sample rows; null: <see cref="RecallCalibrator.BuildQueries"/> for <paramref name="count"/>.</param>
    /// <param name="calibrate">False: publish without a calibration (queries then plan with CF and R only).</param>
    /// <param name="exactQueries">Queries measured against exact neighbours; null: <see cref="RecallCalibrator.ExactQueries"/>.</param>
    /// <param name="started">The calibration started earlier (<see cref="StartCalibration"/>) for these vectors and options; null: started here.
    /// The caller keeps it (and disposes it).</param>
    public static async Task<IndexManifest> BuildAndPublishAsync(
        IndexStore store, float[] vectors, int count, int dims, IndexBuildOptions options,
        IProgress<BuildProgress>? progress = null, CancellationToken cancellationToken = default,
        CalibrationQueries? calibration = null, bool calibrate = true, int? sampleSize = null, int? exactQueries = null, CalibrationStart? started = null)
    {
        if (!calibrate)
        {
            if (started is not null) throw new ArgumentException("a calibration was started for a build without one", nameof(started));
            return await IndexPublisher.BuildAndPublishAsync(store, vectors, count, dims, options, progress, cancellationToken).ConfigureAwait(false);
        }
        // Checked before the build starts, since the exact neighbours start with it.
        options.Validate(count, dims);
        if (started is not null && (calibration is not null || sampleSize is not null || exactQueries is not null))
            throw new ArgumentException("a started calibration already holds its queries", nameof(started));
        if (started is not null && !started.IsFor(vectors, count, dims, options))
            throw new ArgumentException("the calibration was started for other vectors, another metric or another seed", nameof(started));
        using var owned = started is null ? StartCalibration(vectors, count, dims, options.Metric, options.Seed, calibration, sampleSize, exactQueries, cancellationToken) : null;
        var begun = started ?? owned!;
        if (begun.HeldOut is { } heldOut) options = options with { HeldOutRows = heldOut };
        var queries = begun.Queries;
        var exact = begun.Exact;
        const int k = RecallCalibrator.DefaultK;
        // The filtered families' neighbours too: they depend on the input's attributes and the encoding the build fits to
        // them, fitted here at the build's priority (the build then takes the same one).
        using var filtered = exact is null || options.Attributes is null ? null
            : new FilteredRecallCalibrator.NeighboursDuringBuild(options.Attributes, options.Attributes.Encoding, vectors, count, dims, options.Metric, queries,
                begun.Measured, k, cancellationToken);
        return await IndexPublisher.BuildAndPublishAsync(store, vectors, count, dims, options, progress, cancellationToken,
            async (manifest, ct) =>
            {
                if (exact is null) return manifest;
                progress?.Report(new("calibrate", 0));
                var calibrating = DateTimeOffset.UtcNow;
                // The raw vectors are this build's input, mapped as the build mapped them: only codes and attributes are read back.
                var space = new MetricSpace(MetricSpace.Parse(manifest.Metric), manifest.Dimensions, manifest.MaxNorm);
                var opened = await OpenedIndex.OpenUnpublishedAsync(store, manifest, ct, vectorsOf: codes => InputVectors(codes, vectors, space))
                    .ConfigureAwait(false);
                var neighbours = await exact.FinishAsync(ct).ConfigureAwait(false);
                var drawn = filtered is null ? null : await filtered.FinishAsync(ct).ConfigureAwait(false);
                var fitted = RecallCalibrator.Calibrate(opened, neighbours, queries, k,
                    progress is null ? null : new Progress<double>(f => progress.Report(new("calibrate", f))), ct, drawn: drawn);
                // The user's queries stay with the index, for the recalibration after writes.
                if (fitted is not null && queries.SelfIds is null)
                    fitted = await KeptCalibrationQueries.KeepAsync(store, manifest.Version, queries, fitted, ct).ConfigureAwait(false);
                progress?.Report(new("calibrate", 1));
                double seconds = (DateTimeOffset.UtcNow - calibrating).TotalSeconds;
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

    /// <summary>The measured queries' exact neighbours (each base-sample query left out of its own), begun before the build.</summary>
    private static ExactNeighboursDuringBuild StartExactNeighbours(float[] vectors, int count, int dims, Metric metric,
        CalibrationQueries measured, int k, CancellationToken cancellationToken)
    {
        long stored = (long)count * dims;
        var baseSet = new Squash.Core.Vectors.VectorSet(vectors.LongLength == stored ? vectors : vectors[..(int)stored], count, dims);
        return new ExactNeighboursDuringBuild(baseSet, new(measured.Data, measured.Count, dims), k, metric, measured.SelfIds, cancellationToken);
    }
}

/// <summary>
/// A calibrated build's queries and their exact neighbours, begun before the build (<see cref="CalibratedBuild.StartCalibration"/>).
/// Disposing it stops the neighbours' thread (a build that fails or never starts does not wait for it).
/// </summary>
public sealed class CalibrationStart : IDisposable
{
    private readonly float[] _vectors;
    private readonly int _count, _dims, _seed;
    private readonly Metric _metric;

    internal CalibrationStart(float[] vectors, int count, int dims, Metric metric, int seed, int[]? heldOut, CalibrationQueries queries, int measured,
        ExactNeighboursDuringBuild? exact)
    {
        _vectors = vectors;
        _count = count;
        _dims = dims;
        _metric = metric;
        _seed = seed;
        HeldOut = heldOut;
        Queries = queries;
        Measured = measured;
        Exact = exact;
    }

    /// <summary>Base rows held out of the partitioning (the base-sample queries' own rows), or null.</summary>
    internal int[]? HeldOut { get; }
    internal CalibrationQueries Queries { get; }
    /// <summary>How many of the first queries are measured against exact neighbours.</summary>
    internal int Measured { get; }
    /// <summary>Their exact neighbours, being computed; null when the index is too small to calibrate.</summary>
    internal ExactNeighboursDuringBuild? Exact { get; }

    internal bool IsFor(float[] vectors, int count, int dims, IndexBuildOptions options) =>
        ReferenceEquals(vectors, _vectors) && count == _count && dims == _dims && options.Metric == _metric && options.Seed == _seed;

    public void Dispose() => Exact?.Dispose();
}
