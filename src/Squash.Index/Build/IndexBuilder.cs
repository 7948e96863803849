using System.Diagnostics;
using Squash.Core;
using Squash.Index.Attributes;
using Squash.Index.Build.Stages;
using Squash.Index.Model;

namespace Squash.Index.Build;

/// <summary>
/// Builds an index from vectors held in memory by running the build's four steps (<see cref="IndexBuildStages"/>) one
/// after the other: train on a bounded sample (KLT of the total variance, balanced k-means in it, the subspace of the
/// within-partition variance: <see cref="PartitionTraining"/>) → assign every row to its nearest centroid, chunk by
/// chunk → encode each partition (per-partition KLT + OSQ) → finish (routing, manifest). A distributed build runs the
/// same steps as queue tasks, so both write byte-identical segments. Segments go to the sink as soon as they are
/// ready; the returned manifest is for the caller to publish last (a reader never sees a half-written index).
/// Deterministic for a given seed.
/// </summary>
public static class IndexBuilder
{
    /// <summary>Rows mapped and assigned at a time (labels do not depend on it).</summary>
    public const int AssignChunkRows = IndexBuildStages.AssignChunkRows;

    public static async Task<IndexManifest> BuildAsync(
        float[] vectors, int count, int dims, IndexBuildOptions options, string version,
        ISegmentSink sink, IProgress<BuildProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        options.Validate(count, dims);
        if (vectors.LongLength < (long)count * dims) throw new ArgumentException("vector buffer is shorter than count × dims");
        var clock = Stopwatch.StartNew();

        // 1. Train on a bounded sample (the inner-product mapping needs the largest norm of all rows first).
        progress?.Report(new("global klt", 0));
        double maxNorm = options.Metric == Metric.InnerProduct ? MetricSpace.MaxRowNorm(vectors.AsSpan(0, count * dims), dims) : 0;
        int d = new MetricSpace(options.Metric, dims, maxNorm).InternalDimensions;
        int target = IndexBuildStages.TargetPartitions(options, count, dims);
        var trainingRows = PartitionTraining.TrainingRows(count, d, target, options.HeldOutRows);
        var sample = new float[(long)trainingRows.Length * dims];
        for (int i = 0; i < trainingRows.Length; i++) Array.Copy(vectors, (long)trainingRows[i] * dims, sample, (long)i * dims, dims);
        var kmeansProgress = progress is null ? null : new Progress<double>(f => progress.Report(new("k-means", f)));
        var plan = IndexBuildStages.Train(sample, trainingRows.Length, dims, maxNorm, target, options, kmeansProgress, cancellationToken, progress);
        sample = [];
        progress?.Report(new("global klt", 1));
        cancellationToken.ThrowIfCancellationRequested();

        // 2. Assign, chunk by chunk as a distributed build's assign tasks do.
        progress?.Report(new("assign", 0));
        var x = new float[(long)count * d];
        var labels = new int[count];
        for (int start = 0; start < count; start += AssignChunkRows)
        {
            int n = Math.Min(AssignChunkRows, count - start);
            var (chunk, chunkLabels) = IndexBuildStages.Assign(plan, vectors.AsSpan(start * dims, n * dims), n);
            chunk.CopyTo(x, (long)start * d);
            chunkLabels.CopyTo(labels, start);
            progress?.Report(new("assign", (start + n) / (double)count));
            cancellationToken.ThrowIfCancellationRequested();
        }
        // Partitions no row chose are dropped; the rest keep their order.
        var sizes = new long[plan.Partitions];
        foreach (int l in labels) sizes[l]++;
        var kept = IndexBuildStages.KeptPartitions(sizes);
        var final = new int[plan.Partitions];
        for (int t = 0; t < kept.Length; t++) final[kept[t]] = t;
        var members = kept.Select(p => new int[sizes[p]]).ToArray();
        var fill = new int[kept.Length];
        for (int i = 0; i < count; i++) { int t = final[labels[i]]; members[t][fill[t]++] = i; }

        // 3. Encode each partition from its own rows; each writes its segments as soon as it is done.
        var attributeInfo = options.Attributes?.Encoding;
        var summaries = new PartitionSummary[kept.Length];
        int done = 0;
        progress?.Report(new("encode", 0));
        await Parallel.ForEachAsync(Enumerable.Range(0, kept.Length),
            new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount, CancellationToken = cancellationToken },
            async (t, ct) =>
            {
                var ids = members[t];
                var rows = new float[(long)ids.Length * d];
                for (int i = 0; i < ids.Length; i++) Array.Copy(x, (long)ids[i] * d, rows, (long)i * d, d);
                var encoded = IndexBuildStages.Encode(plan, t, ids, rows, options.MaxBitsPerDimension, options.Attributes, attributeInfo);
                await sink.WriteAsync(encoded.Entry.Codes.Name, encoded.Codes, ct).ConfigureAwait(false);
                await sink.WriteAsync(encoded.Entry.Vectors.Name, encoded.Vectors, ct).ConfigureAwait(false);
                if (encoded.Attributes is { } attributes) await sink.WriteAsync(encoded.Entry.Attributes!.Name, attributes, ct).ConfigureAwait(false);
                summaries[t] = new PartitionSummary(encoded.Entry, encoded.Centroid, encoded.Radius, Values: encoded.Values);
                progress?.Report(new("encode", Interlocked.Increment(ref done) / (double)kept.Length));
            }).ConfigureAwait(false);

        // 4. Finish: the routing data now, the manifest for the caller to publish last.
        var (routing, manifest) = IndexBuildStages.Finish(plan, summaries, count, version, options, attributeInfo, clock.Elapsed.TotalSeconds);
        await sink.WriteAsync(IndexBuildStages.RoutingName, routing, cancellationToken).ConfigureAwait(false);
        progress?.Report(new("done", 1));
        return manifest;
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
}
