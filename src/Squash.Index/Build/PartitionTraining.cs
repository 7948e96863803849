using Squash.Core.Linalg;
using Squash.Core.Partitioning;

namespace Squash.Index.Build;

/// <summary>
/// What a build fits globally, from a bounded training sample of the (metric-mapped) rows: the clustering space and its
/// centroids, and the subspace the codes keep. Every other row only needs this to be assigned (nearest centroid) and
/// encoded, so a build can stream its source in chunks, on one machine or many, with memory bounded by the sample.
/// </summary>
public sealed record PartitionTraining(Klt Clustering, float[] Centroids, int Partitions, Klt Global, int BudgetBits)
{
    /// <summary>Most training rows: the covariances and k-means gain nothing from more (balanced k-means keeps ~200 per partition at P = 1,000).</summary>
    public const int MaxTrainingRows = 200_000;

    /// <summary>Training rows kept within about this many floats, so that a worker's memory is bounded at any dimension.</summary>
    private const long MaxTrainingFloats = 64L << 20;

    /// <summary>
    /// The training rows: an even sample (by row number, so a worker can fetch them by ranged reads) of every row but
    /// <paramref name="heldOut"/>, at most <see cref="MaxTrainingRows"/> and about 256 MB of floats, at least 4 per partition.
    /// </summary>
    public static int[] TrainingRows(int count, int dims, int partitions, int[]? heldOut)
    {
        var held = heldOut is { Length: > 0 } ? heldOut.Distinct().Order().ToArray() : [];
        int available = count - held.Length;
        long cap = Math.Max(4L * partitions, Math.Min(MaxTrainingRows, MaxTrainingFloats / Math.Max(1, dims)));
        int size = (int)Math.Min(available, cap);
        var rows = new int[size];
        // Row i is the (i·available/size)-th row that is not held out. Those positions only grow, so one walk along the
        // sorted held-out rows finds them all without listing the eligible rows (N ints).
        int skipped = 0;
        for (int i = 0; i < size; i++)
        {
            long k = (long)i * available / size;
            long row = k + skipped;
            while (skipped < held.Length && held[skipped] <= row) row = k + ++skipped;
            rows[i] = (int)row;
        }
        return rows;
    }

    /// <summary>
    /// Fits on <paramref name="count"/> compact training rows (row-major, <paramref name="dims"/> = the internal dimensions):
    /// <list type="number">
    /// <item>the KLT of the total covariance, truncated to <see cref="IndexBuildOptions.ClusteringEnergy"/> of it: between-cluster
    /// spread dominates the total variance, so these axes separate partitions (k-means works there);</item>
    /// <item>balanced k-means in that space; each centroid is the mean of its training members;</item>
    /// <item>the codes' subspace: eigenvectors of the pooled within-partition covariance (total − between, on the same
    /// rows) holding <see cref="IndexBuildOptions.EnergyKept"/> of it, because the variance inside a partition is what tells neighbours apart. Far-apart
    /// clusters would otherwise fill the kept axes with their centres' spread and leave the within-cluster axes out.</item>
    /// </list>
    /// <paramref name="eigenProgress"/> follows the two d×d eigendecompositions (stages <see cref="TotalEigenStage"/> and
    /// <see cref="WithinEigenStage"/>), which take most of the time at thousands of dimensions.
    /// </summary>
    public static PartitionTraining Fit(float[] rows, int count, int dims, int partitions, IndexBuildOptions options,
        IProgress<double>? kmeansProgress = null, CancellationToken cancellationToken = default,
        IProgress<BuildProgress>? eigenProgress = null)
    {
        ArgumentNullException.ThrowIfNull(rows);
        ArgumentNullException.ThrowIfNull(options);
        if (partitions < 1 || partitions > count) throw new ArgumentException($"{partitions} partitions cannot be fitted on {count} training rows");
        var (totalMean, totalCovariance) = Covariance.Compute(rows, count, dims);
        var (totalValues, totalVectors) = SymmetricEigen.Decompose(totalCovariance, dims, StageProgress(eigenProgress, TotalEigenStage));
        var mean = totalMean.Select(v => (float)v).ToArray();
        int clusteringDims = IndexBuilder.ComponentsFor(totalValues, IndexBuildOptions.ClusteringEnergy);
        var clustering = Klt.FromParts(mean, LeadingRows(totalVectors, dims, clusteringDims), totalValues, dims, clusteringDims);
        var yc = new float[(long)count * clusteringDims];
        clustering.ProjectMany(rows.AsSpan(0, count * dims), count, yc);
        cancellationToken.ThrowIfCancellationRequested();

        var fit = BalancedKMeans.Fit(yc, count, clusteringDims, partitions, options.Seed,
            new BalancedKMeansOptions { MaxIterations = options.KMeansIterations, Balance = options.Balance }, kmeansProgress);
        cancellationToken.ThrowIfCancellationRequested();

        var within = WithinPartitionCovariance(totalCovariance, totalMean, rows, count, dims, fit.Labels, partitions);
        var (withinValues, withinVectors) = SymmetricEigen.Decompose(within, dims, StageProgress(eigenProgress, WithinEigenStage));
        int m = IndexBuilder.ComponentsFor(withinValues, options.EnergyKept);
        var global = Klt.FromParts(mean, LeadingRows(withinVectors, dims, m), withinValues, dims, m);
        // The budget is spent on the kept components: bits-per-dim on average over them, at most max-bits each.
        int budget = Math.Max(1, (int)Math.Round(options.BitsPerDimension * m));
        return new PartitionTraining(clustering, fit.Centroids, partitions, global, budget);
    }

    /// <summary>Progress stage of the total covariance's eigendecomposition (the clustering KLT).</summary>
    public const string TotalEigenStage = "klt eigenvectors";

    /// <summary>Progress stage of the within-partition covariance's eigendecomposition (the codes' subspace).</summary>
    public const string WithinEigenStage = "within-partition eigenvectors";

    private static IProgress<double>? StageProgress(IProgress<BuildProgress>? progress, string stage) =>
        progress is null ? null : new FractionProgress(f => progress.Report(new(stage, f)));

    /// <summary>Reports on the caller's thread, in order (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class FractionProgress(Action<double> report) : IProgress<double>
    {
        public void Report(double value) => report(value);
    }

    /// <summary>Nearest-centroid labels of <paramref name="count"/> rows (internal space), projected into the clustering space first.</summary>
    public void Assign(ReadOnlySpan<float> rows, int count, Span<int> labels)
    {
        var yc = new float[(long)count * Clustering.OutputDims];
        Clustering.ProjectMany(rows[..(count * Clustering.InputDims)], count, yc);
        NearestCentroid.Assign(yc, count, Clustering.OutputDims, Centroids, Partitions, labels);
    }

    /// <summary>
    /// Pooled within-partition covariance Σ_p (n_p/n) Cov_p = total − Σ_p (n_p/n)(μ_p − μ)(μ_p − μ)ᵀ over the same rows
    /// as <paramref name="total"/>, so that the identity is exact (partition means from other rows would leave a
    /// between-partition error as large as the within part on well-separated data).
    /// </summary>
    public static double[] WithinPartitionCovariance(double[] total, double[] totalMean, float[] rows, int count, int d, int[] labels, int partitions)
    {
        var sums = new double[(long)partitions * d];
        var sizes = new long[partitions];
        for (int r = 0; r < count; r++)
        {
            int p = labels[r];
            sizes[p]++;
            var dst = sums.AsSpan(p * d, d);
            var src = rows.AsSpan(r * d, d);
            for (int j = 0; j < d; j++) dst[j] += src[j];
        }
        // Weighted centred means, so that the between part is Σ_p c_p c_pᵀ with c_p = sqrt(n_p/n)(μ_p − μ).
        var centred = new double[(long)partitions * d];
        for (int p = 0; p < partitions; p++)
        {
            if (sizes[p] == 0) continue;
            double w = Math.Sqrt(sizes[p] / (double)count);
            for (int j = 0; j < d; j++) centred[p * d + j] = w * (sums[p * d + j] / sizes[p] - totalMean[j]);
        }
        var within = new double[d * d];
        Parallel.For(0, d, i =>
        {
            for (int j = i; j < d; j++)
            {
                double between = 0;
                for (int p = 0; p < partitions; p++) between += centred[p * d + i] * centred[p * d + j];
                double v = total[i * d + j] - between;
                within[i * d + j] = v;
                within[j * d + i] = v;
            }
        });
        return within;
    }

    /// <summary>The first <paramref name="rows"/> eigenvectors (columns of the row-major d×d <paramref name="vectors"/>) as rows.</summary>
    private static float[] LeadingRows(double[] vectors, int d, int rows)
    {
        var basis = new float[rows * d];
        for (int i = 0; i < rows; i++)
            for (int k = 0; k < d; k++)
                basis[i * d + k] = (float)vectors[k * d + i];
        return basis;
    }
}
