using System.Diagnostics;
using Squash.Core;
using Squash.Core.Linalg;
using Squash.Core.Partitioning;
using Squash.Core.Quantization;
using Squash.Index.Attributes;
using Squash.Index.Model;

namespace Squash.Index.Build;

/// <summary>
/// Builds an index from vectors held in memory: metric mapping → training on a bounded sample (KLT of the total
/// variance, balanced k-means in it, the subspace of the within-partition variance: <see cref="PartitionTraining"/>) →
/// every row to its nearest centroid → per-partition KLT + OSQ encoding. Segments go to the sink as soon as they are ready; the returned
/// manifest is for the caller to publish last (a reader never sees a half-written index).
/// Deterministic for a given seed.
/// </summary>
public static class IndexBuilder
{
    /// <summary>Rows projected and assigned at a time: the unit an assign task of a distributed build handles.</summary>
    public const int AssignChunkRows = 65_536;

    public static async Task<IndexManifest> BuildAsync(
        float[] vectors, int count, int dims, IndexBuildOptions options, string version,
        ISegmentSink sink, IProgress<BuildProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        options.Validate(count, dims);
        if (vectors.LongLength < (long)count * dims) throw new ArgumentException("vector buffer is shorter than count × dims");
        var clock = Stopwatch.StartNew();

        // 1. Map into the internal squared-L2 space.
        progress?.Report(new("map", 0));
        double maxNorm = options.Metric == Metric.InnerProduct ? MetricSpace.MaxRowNorm(vectors.AsSpan(0, count * dims), dims) : 0;
        var space = new MetricSpace(options.Metric, dims, maxNorm);
        int d = space.InternalDimensions;
        float[] x = MapAll(vectors, count, dims, space);
        cancellationToken.ThrowIfCancellationRequested();

        // 2. Training (bounded sample): clustering space, centroids, and the subspace the codes keep.
        progress?.Report(new("global klt", 0));
        int partitions = options.Partitions > 0 ? options.Partitions : IndexBuildOptions.DefaultPartitions(count, dims);
        var trainingRows = PartitionTraining.TrainingRows(count, d, partitions, options.HeldOutRows);
        var training = new float[(long)trainingRows.Length * d];
        for (int i = 0; i < trainingRows.Length; i++) Array.Copy(x, (long)trainingRows[i] * d, training, (long)i * d, d);
        var kmeansProgress = progress is null ? null : new Progress<double>(f => progress.Report(new("k-means", f)));
        var trained = PartitionTraining.Fit(training, trainingRows.Length, d, partitions, options, kmeansProgress, cancellationToken);
        training = [];
        var global = trained.Global;
        int m = global.OutputDims, budget = trained.BudgetBits;
        progress?.Report(new("global klt", 1));
        cancellationToken.ThrowIfCancellationRequested();

        // 3. Every row joins its nearest centroid (chunk by chunk, as a distributed build's assign tasks do); partitions
        //    no row chose are dropped.
        var labels = new int[count];
        for (int start = 0; start < count; start += AssignChunkRows)
        {
            int n = Math.Min(AssignChunkRows, count - start);
            trained.Assign(x.AsSpan(start * d, n * d), n, labels.AsSpan(start, n));
        }
        partitions = DropEmpty(labels, partitions);
        var members = GroupMembers(labels, partitions);
        var y = new float[(long)count * m];
        global.ProjectMany(x.AsSpan(0, count * d), count, y);
        cancellationToken.ThrowIfCancellationRequested();

        // Residual bookkeeping: ‖x − μ_g‖² − ‖y‖², the energy outside the global subspace.
        var outsideGlobal = new double[count];
        Parallel.For(0, count, i =>
        {
            double s = 0, t = 0;
            var row = x.AsSpan(i * d, d);
            for (int j = 0; j < d; j++) { double v = row[j] - (double)global.Mean[j]; s += v * v; }
            foreach (float v in y.AsSpan(i * m, m)) t += (double)v * v;
            outsideGlobal[i] = s - t;
        });

        var attributeInfo = options.Attributes is null ? null : AttributeEncoding.Fit(options.Attributes);

        // 4. Encode partitions in parallel; each writes its two segments as soon as it is done.
        var centroids = new float[(long)partitions * d];
        var radii = new float[partitions];
        var entries = new PartitionEntry[partitions];
        int done = 0;
        progress?.Report(new("encode", 0));
        await Parallel.ForEachAsync(Enumerable.Range(0, partitions),
            new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount, CancellationToken = cancellationToken },
            async (p, ct) =>
            {
                var encoded = PartitionEncoder.Encode(p, members[p], x, d, y, m, outsideGlobal, budget, options.MaxBitsPerDimension);
                CentroidAndRadius(x, d, members[p], centroids.AsSpan(p * d, d), out radii[p]);
                var codesName = $"p{p:D5}.codes.seg";
                var vectorsName = $"p{p:D5}.vectors.seg";
                var codesBytes = encoded.Codes.ToSegment();
                var vectorBytes = encoded.Vectors.ToSegment();
                await sink.WriteAsync(codesName, codesBytes, ct).ConfigureAwait(false);
                await sink.WriteAsync(vectorsName, vectorBytes, ct).ConfigureAwait(false);
                SegmentRef? attributesRef = null;
                AttributeStats[]? stats = null;
                if (attributeInfo is not null)
                {
                    var attrs = PartitionAttributes.Encode(options.Attributes!, attributeInfo, members[p]);
                    var attributesName = $"p{p:D5}.attributes.seg";
                    var attributeBytes = attrs.ToSegment();
                    await sink.WriteAsync(attributesName, attributeBytes, ct).ConfigureAwait(false);
                    attributesRef = new SegmentRef(attributesName, attributeBytes.LongLength);
                    stats = attrs.Statistics();
                }
                entries[p] = new PartitionEntry
                {
                    Id = p,
                    Count = encoded.Codes.Count,
                    CodedDimensions = encoded.Codes.CodedDimensions,
                    BitsPerVector = encoded.Codes.BitsPerVector,
                    Codes = new SegmentRef(codesName, codesBytes.LongLength),
                    Vectors = new SegmentRef(vectorsName, vectorBytes.LongLength),
                    Attributes = attributesRef,
                    AttributeStats = stats,
                };
                progress?.Report(new("encode", Interlocked.Increment(ref done) / (double)partitions));
            }).ConfigureAwait(false);

        var routing = new RoutingData
        {
            GlobalTransform = global,
            Centroids = centroids,
            Radii = radii,
            PartitionSizes = members.Select(a => a.Length).ToArray(),
        };
        var routingBytes = routing.ToSegment();
        const string routingName = "routing.seg";
        await sink.WriteAsync(routingName, routingBytes, cancellationToken).ConfigureAwait(false);
        progress?.Report(new("done", 1));

        return new IndexManifest
        {
            Version = version,
            CreatedUtc = DateTimeOffset.UtcNow,
            Dimensions = dims,
            InternalDimensions = d,
            Metric = MetricSpace.Name(options.Metric),
            MaxNorm = maxNorm,
            Count = count,
            GlobalDimensions = m,
            Build = new BuildParameters
            {
                Partitions = partitions,
                BitsPerDimension = options.BitsPerDimension,
                BudgetBits = budget,
                MaxBitsPerDimension = options.MaxBitsPerDimension,
                Seed = options.Seed,
                Balance = options.Balance,
                KMeansIterations = options.KMeansIterations,
                EnergyKept = options.EnergyKept,
                BuildSeconds = Math.Round(clock.Elapsed.TotalSeconds, 3),
            },
            Routing = new SegmentRef(routingName, routingBytes.LongLength),
            Partitions = entries,
            Attributes = attributeInfo,
        };
    }

    /// <summary>The fewest leading components whose eigenvalues hold <paramref name="fraction"/> of the variance.</summary>
    public static int ComponentsFor(ReadOnlySpan<double> eigenvalues, double fraction)
    {
        double total = 0;
        foreach (double e in eigenvalues) total += Math.Max(0, e);
        if (total <= 0) return 1;
        double sum = 0;
        for (int i = 0; i < eigenvalues.Length; i++)
        {
            sum += Math.Max(0, eigenvalues[i]);
            if (sum >= fraction * total) return i + 1;
        }
        return eigenvalues.Length;
    }

    private static float[] MapAll(float[] vectors, int count, int dims, MetricSpace space)
    {
        if (space.Metric == Metric.L2) return vectors;
        int d = space.InternalDimensions;
        var x = new float[(long)count * d];
        Parallel.For(0, count, i => space.MapStored(vectors.AsSpan(i * dims, dims), x.AsSpan(i * d, d)));
        return x;
    }

    /// <summary>Renumbers labels so that only partitions some row chose remain, in their order; the new partition count.</summary>
    public static int DropEmpty(int[] labels, int partitions)
    {
        var sizes = new int[partitions];
        foreach (int l in labels) sizes[l]++;
        var renumber = new int[partitions];
        int kept = 0;
        for (int p = 0; p < partitions; p++) renumber[p] = sizes[p] > 0 ? kept++ : -1;
        if (kept == partitions) return partitions;
        for (int i = 0; i < labels.Length; i++) labels[i] = renumber[labels[i]];
        return kept;
    }

    private static int[][] GroupMembers(int[] labels, int partitions)
    {
        var sizes = new int[partitions];
        foreach (int l in labels) sizes[l]++;
        var members = new int[partitions][];
        for (int p = 0; p < partitions; p++) members[p] = new int[sizes[p]];
        var fill = new int[partitions];
        for (int i = 0; i < labels.Length; i++) members[labels[i]][fill[labels[i]]++] = i;
        return members;
    }

    private static void CentroidAndRadius(float[] x, int d, int[] rows, Span<float> centroid, out float radius)
    {
        var sum = new double[d];
        foreach (int r in rows)
        {
            var row = x.AsSpan(r * d, d);
            for (int j = 0; j < d; j++) sum[j] += row[j];
        }
        for (int j = 0; j < d; j++) centroid[j] = rows.Length == 0 ? 0 : (float)(sum[j] / rows.Length);
        double max = 0;
        foreach (int r in rows)
        {
            var row = x.AsSpan(r * d, d);
            double s = 0;
            for (int j = 0; j < d; j++) { double v = row[j] - (double)centroid[j]; s += v * v; }
            max = Math.Max(max, s);
        }
        // Rounded up a little so that the radius stays a true bound after float conversion.
        radius = (float)(Math.Sqrt(max) * (1 + 1e-6) + 1e-6);
    }
}
