using Squash.Core.Vectors;
using MathNet.Numerics.LinearAlgebra;
using Squash.Cli.Datasets;

namespace Squash.Cli.Tests.Datasets;

public sealed class SeparatedMixtureGeneratorTests
{
    [Fact]
    public void Same_seed_gives_identical_data_different_seed_does_not()
    {
        // n spans several generation chunks so chunk seeding and parallel scheduling are both exercised.
        var first = SeparatedMixtureGenerator.Generate(10_000, 12, 50, seed: 42, clusters: 8);
        var again = SeparatedMixtureGenerator.Generate(10_000, 12, 50, seed: 42, clusters: 8);
        var other = SeparatedMixtureGenerator.Generate(10_000, 12, 50, seed: 43, clusters: 8);

        Assert.Equal(first.Base.Data, again.Base.Data);
        Assert.Equal(first.Queries.Data, again.Queries.Data);
        Assert.Equal(first.BaseClusters, again.BaseClusters);
        Assert.NotEqual(first.Base.Data, other.Base.Data);
        Assert.NotEqual(first.Queries.Data, other.Queries.Data);
        Assert.Equal((10_000, 12), (first.Base.Count, first.Base.Dimensions));
        Assert.Equal((50, 12), (first.Queries.Count, first.Queries.Dimensions));
        Assert.All(first.Base.Data, x => Assert.True(float.IsFinite(x)));
    }

    [Theory]
    [InlineData(1.2)]
    [InlineData(2.0)]
    public void Within_cluster_spectrum_follows_the_exponent(double decay)
    {
        const int dims = 24;
        var mixture = SeparatedMixtureGenerator.Generate(40_000, dims, 1, seed: 11, clusters: 2, spectrumDecay: decay);
        var eigen = Eigenvalues(Covariance(mixture.Base, RowsOf(mixture.BaseClusters, 0)));

        // Model: λ_i = i^-a. About 20,000 points give eigenvalues to a few per cent.
        for (int i = 0; i < dims; i++)
        {
            double expected = Math.Pow(i + 1, -decay);
            Assert.InRange(eigen[i], expected * 0.85, expected * 1.15);
        }

        // Least-squares slope of log λ against log i.
        double[] x = Enumerable.Range(1, dims).Select(i => Math.Log(i)).ToArray();
        double[] y = eigen.Select(e => Math.Log(e)).ToArray();
        double mx = x.Average(), my = y.Average();
        double slope = x.Zip(y, (a, b) => (a - mx) * (b - my)).Sum() / x.Sum(a => (a - mx) * (a - mx));
        Assert.InRange(slope, -decay - 0.05, -decay + 0.05);
    }

    [Fact]
    public void Each_cluster_has_its_own_orientation()
    {
        const int dims = 24;
        var mixture = SeparatedMixtureGenerator.Generate(20_000, dims, 1, seed: 12, clusters: 2);
        var first = Covariance(mixture.Base, RowsOf(mixture.BaseClusters, 0));
        var second = Covariance(mixture.Base, RowsOf(mixture.BaseClusters, 1));
        var topAxis = first.Evd(Symmetricity.Symmetric).EigenVectors.Column(dims - 1);

        // Along its own top axis cluster 0 has variance 1; a shared rotation would give cluster 1 the same.
        // A random direction gets the average within-cluster variance, W / dims ≈ 0.1.
        Assert.InRange(topAxis * first * topAxis, 0.9, 1.1);
        Assert.True(topAxis * second * topAxis < 0.4, $"cluster 1 variance along cluster 0's top axis: {topAxis * second * topAxis:F3}");
    }

    [Fact]
    public void Global_principal_axes_keep_little_of_the_within_cluster_variance()
    {
        const int dims = 64, clusters = 16;
        var mixture = SeparatedMixtureGenerator.Generate(32_000, dims, 1, seed: 13, clusters: clusters);
        var all = Enumerable.Range(0, mixture.Base.Count).ToArray();
        var globalEvd = Covariance(mixture.Base, all).Evd(Symmetricity.Symmetric);
        double[] globalEigen = globalEvd.EigenValues.Select(e => e.Real).Reverse().ToArray();
        int globalDims = DimsFor(globalEigen, 0.95);

        double[] model = Enumerable.Range(1, dims).Select(i => Math.Pow(i, -SeparatedMixtureGenerator.DefaultSpectrumDecay)).ToArray();
        int withinDims = DimsFor(model, 0.95);

        // The centres span at most clusters − 1 directions and hold almost all of the global variance.
        Assert.True(globalDims < clusters, $"global 95 % needs {globalDims} dims");
        Assert.True(2 * globalDims < withinDims, $"global 95 % needs {globalDims} dims, one cluster needs {withinDims}");

        // What a 95 % global truncation keeps of each cluster's own variance: far from the 95 % it promises.
        var kept = globalEvd.EigenVectors.SubMatrix(0, dims, dims - globalDims, globalDims);
        for (int c = 0; c < clusters; c++)
        {
            var cov = Covariance(mixture.Base, RowsOf(mixture.BaseClusters, c));
            double share = (kept.Transpose() * cov * kept).Trace() / cov.Trace();
            Assert.True(share < 0.6, $"cluster {c}: the global top {globalDims} axes keep {share:P0} of its variance");
        }
    }

    [Fact]
    public void Queries_come_from_the_mixture_not_from_the_base()
    {
        var mixture = SeparatedMixtureGenerator.Generate(2000, 8, 200, seed: 5, clusters: 8);
        var (b, q) = (mixture.Base, mixture.Queries);
        var baseRows = new HashSet<string>(Enumerable.Range(0, b.Count).Select(i => string.Join(',', b.Row(i).ToArray())));
        for (int i = 0; i < q.Count; i++)
        {
            Assert.DoesNotContain(string.Join(',', q.Row(i).ToArray()), baseRows);
        }

        // Every cluster is asked about, and each query lies nearer its own cluster's base points than any other's.
        Assert.Equal(8, mixture.QueryClusters.Distinct().Count());
        var centroids = Enumerable.Range(0, 8).Select(c => Mean(b, RowsOf(mixture.BaseClusters, c))).ToArray();
        for (int i = 0; i < q.Count; i++)
        {
            var row = Vector<double>.Build.DenseOfEnumerable(q.Row(i).ToArray().Select(v => (double)v));
            int nearest = Enumerable.Range(0, 8).MinBy(c => (centroids[c] - row).L2Norm());
            Assert.Equal(mixture.QueryClusters[i], nearest);
        }
    }

    [Fact]
    public void Arguments_are_validated()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => SeparatedMixtureGenerator.Generate(0, 4, 1, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => SeparatedMixtureGenerator.Generate(10, 0, 1, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => SeparatedMixtureGenerator.Generate(10, 4, 1, 1, clusters: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => SeparatedMixtureGenerator.Generate(10, 4, 1, 1, separation: -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => SeparatedMixtureGenerator.Generate(10, 4, 1, 1, spectrumDecay: double.NaN));
        Assert.Throws<ArgumentOutOfRangeException>(() => SeparatedMixtureGenerator.Generate(10, 4096, 1, 1, clusters: 64));
    }

    private static int[] RowsOf(int[] labels, int cluster) =>
        Enumerable.Range(0, labels.Length).Where(i => labels[i] == cluster).ToArray();

    private static int DimsFor(double[] descending, double fraction)
    {
        double total = descending.Sum(), running = 0;
        for (int i = 0; i < descending.Length; i++)
        {
            running += descending[i];
            if (running >= fraction * total) return i + 1;
        }

        return descending.Length;
    }

    private static double[] Eigenvalues(Matrix<double> covariance) =>
        covariance.Evd(Symmetricity.Symmetric).EigenValues.Select(e => e.Real).OrderDescending().ToArray();

    private static Vector<double> Mean(VectorSet v, int[] rows)
    {
        var sum = Vector<double>.Build.Dense(v.Dimensions);
        foreach (int r in rows)
        {
            sum += Vector<double>.Build.DenseOfEnumerable(v.Row(r).ToArray().Select(x => (double)x));
        }

        return sum / rows.Length;
    }

    /// <summary>Sample covariance of the given rows.</summary>
    private static Matrix<double> Covariance(VectorSet v, int[] rows)
    {
        int d = v.Dimensions;
        var centred = Matrix<double>.Build.Dense(rows.Length, d);
        var mean = Mean(v, rows);
        for (int r = 0; r < rows.Length; r++)
        {
            var row = v.Row(rows[r]);
            for (int j = 0; j < d; j++)
            {
                centred[r, j] = row[j] - mean[j];
            }
        }

        return centred.TransposeThisAndMultiply(centred) / (rows.Length - 1);
    }
}
