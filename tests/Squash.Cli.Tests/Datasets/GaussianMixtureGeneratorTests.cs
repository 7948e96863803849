using Squash.Core.Vectors;
using MathNet.Numerics.LinearAlgebra;
using Squash.Cli.Datasets;

namespace Squash.Cli.Tests.Datasets;

public sealed class GaussianMixtureGeneratorTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Shapes_match_the_request()
    {
        var (b, q) = GaussianMixtureGenerator.Generate(n: 5000, dims: 7, queries: 33, seed: 1);
        Assert.Equal((5000, 7), (b.Count, b.Dimensions));
        Assert.Equal((33, 7), (q.Count, q.Dimensions));
        Assert.All(b.Data, x => Assert.True(float.IsFinite(x)));
    }

    [Fact]
    public void Same_seed_gives_identical_bytes_different_seed_does_not()
    {
        // n spans several generation chunks so chunk seeding and parallel scheduling are both exercised.
        var first = GaussianMixtureGenerator.Generate(10_000, 12, 50, seed: 42);
        var again = GaussianMixtureGenerator.Generate(10_000, 12, 50, seed: 42);
        var other = GaussianMixtureGenerator.Generate(10_000, 12, 50, seed: 43);

        string a = _dir.File("a.fvecs"), b = _dir.File("b.fvecs"), c = _dir.File("c.fvecs");
        VectorFile.WriteFvecs(a, first.Base);
        VectorFile.WriteFvecs(b, again.Base);
        VectorFile.WriteFvecs(c, other.Base);
        Assert.Equal(File.ReadAllBytes(a), File.ReadAllBytes(b));
        Assert.NotEqual(File.ReadAllBytes(a), File.ReadAllBytes(c));
        Assert.Equal(first.Queries.Data, again.Queries.Data);
        Assert.NotEqual(first.Queries.Data, other.Queries.Data);
    }

    [Fact]
    public void Queries_are_not_copies_of_base_vectors()
    {
        var (b, q) = GaussianMixtureGenerator.Generate(2000, 8, 100, seed: 5);
        var baseRows = new HashSet<string>(Enumerable.Range(0, b.Count).Select(i => string.Join(',', b.Row(i).ToArray())));
        for (int i = 0; i < q.Count; i++)
        {
            Assert.DoesNotContain(string.Join(',', q.Row(i).ToArray()), baseRows);
        }
    }

    [Fact]
    public void Variance_spectrum_decays_and_is_not_axis_aligned()
    {
        const int dims = 16;
        var (b, _) = GaussianMixtureGenerator.Generate(4000, dims, 1, seed: 9);
        var covariance = Covariance(b);
        double[] eigen = covariance.Evd().EigenValues.Select(e => e.Real).Order().ToArray();

        // Model variance along principal axis j is ∝ 1/(j+1), so top / bottom ≈ dims; allow sampling noise.
        Assert.True(eigen[^1] > 6 * eigen[0], $"top {eigen[^1]:F3} vs smallest {eigen[0]:F3}");

        // After the random rotation the raw coordinates share the variance far more evenly than the principal axes.
        double[] diagonal = Enumerable.Range(0, dims).Select(i => covariance[i, i]).ToArray();
        double axisRatio = diagonal.Max() / diagonal.Min();
        Assert.True(axisRatio < (eigen[^1] / eigen[0]) / 2, $"axis ratio {axisRatio:F2} vs eigen ratio {eigen[^1] / eigen[0]:F2}");
    }

    [Fact]
    public void Cluster_count_changes_the_data()
    {
        var few = GaussianMixtureGenerator.Generate(500, 4, 1, seed: 3, clusters: 2);
        var many = GaussianMixtureGenerator.Generate(500, 4, 1, seed: 3, clusters: 50);
        Assert.NotEqual(few.Base.Data, many.Base.Data);
        Assert.Equal(16, GaussianMixtureGenerator.DefaultClusters(1000));
        Assert.Equal(500, GaussianMixtureGenerator.DefaultClusters(1_000_000));
    }

    [Fact]
    public void Arguments_are_validated()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => GaussianMixtureGenerator.Generate(0, 4, 1, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => GaussianMixtureGenerator.Generate(10, 0, 1, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => GaussianMixtureGenerator.Generate(10, 4097, 1, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => GaussianMixtureGenerator.Generate(10, 4, -1, 1));
    }

    /// <summary>Plain two-pass sample covariance, deliberately naive.</summary>
    private static Matrix<double> Covariance(VectorSet v)
    {
        int d = v.Dimensions;
        var mean = new double[d];
        for (int i = 0; i < v.Count; i++)
        {
            var row = v.Row(i);
            for (int j = 0; j < d; j++)
            {
                mean[j] += row[j];
            }
        }

        for (int j = 0; j < d; j++)
        {
            mean[j] /= v.Count;
        }

        var cov = Matrix<double>.Build.Dense(d, d);
        for (int i = 0; i < v.Count; i++)
        {
            var row = v.Row(i);
            for (int a = 0; a < d; a++)
            {
                for (int c = 0; c < d; c++)
                {
                    cov[a, c] += (row[a] - mean[a]) * (row[c] - mean[c]);
                }
            }
        }

        return cov / (v.Count - 1);
    }
}
