using Squash.Core.Vectors;
using MathNet.Numerics.LinearAlgebra;

namespace Squash.Cli.Datasets;

/// <summary>
/// Synthetic benchmark data that behaves more like learned embeddings than uniform noise: a Gaussian
/// mixture whose variance is concentrated in a few directions, with those directions hidden by a random
/// rotation so that per-axis tricks get no free help.
/// </summary>
/// <remarks>
/// Model, before rotation, with axis scale s_j = (j+1)^-1/2 (variance ∝ 1/(j+1), a slowly decaying spectrum):
/// <list type="bullet">
/// <item>cluster centre c, coordinate j ~ N(0, (CentreSpread·s_j)²);</item>
/// <item>a point of cluster c is c + e with e_j ~ N(0, s_j²);</item>
/// <item>clusters get weights drawn uniformly from [0.5, 1.5) so their sizes differ moderately.</item>
/// </list>
/// Every vector is then multiplied by one random orthogonal matrix Q (QR of a Gaussian matrix with R's
/// diagonal signs folded into Q, which makes Q Haar-distributed). Queries come from the same mixture
/// (same centres, weights and Q) with an independent random stream, so they are not copies of base points.
/// Rows are generated in fixed chunks, each with its own seeded stream, so the output for a seed is
/// identical whatever the thread count (on the same hardware: SIMD width can change float rounding).
/// </remarks>
public static class GaussianMixtureGenerator
{
    /// <summary>Centre spread relative to within-cluster noise, per axis.</summary>
    public const double CentreSpread = 2.0;

    private const ulong ModelStream = 0;
    private const ulong BaseStream = 1;
    private const ulong QueryStream = 2;

    public static int DefaultClusters(int n) => Math.Max(16, n / 2000);

    public static (VectorSet Base, VectorSet Queries) Generate(int n, int dims, int queries, int seed, int clusters = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(dims, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(dims, VectorFile.MaxDimensions);
        ArgumentOutOfRangeException.ThrowIfNegative(queries);
        ArgumentOutOfRangeException.ThrowIfNegative(clusters);
        if ((long)n * dims > Array.MaxLength || (long)queries * dims > Array.MaxLength)
        {
            throw new ArgumentOutOfRangeException(nameof(n), $"{n} x {dims} values do not fit in one array.");
        }

        var model = CreateModel(dims, clusters > 0 ? clusters : DefaultClusters(n), seed);
        var baseSet = model.Sample(n, seed, BaseStream).Vectors;
        var querySet = model.Sample(queries, seed, QueryStream).Vectors;
        return (baseSet, querySet);
    }

    private static MixtureSampler CreateModel(int dims, int clusters, int seed)
    {
        var rng = new Xoshiro256(seed, ModelStream, 0);
        var scale = new double[dims];
        for (int j = 0; j < dims; j++)
        {
            scale[j] = 1.0 / Math.Sqrt(j + 1);
        }

        var q = SeparatedMixtureGenerator.HaarRotation(dims, ref rng);
        var noiseMap = MixtureSampler.NoiseMap(q, scale);

        var centres = new float[clusters * dims];
        var raw = Vector<double>.Build.Dense(dims);
        for (int c = 0; c < clusters; c++)
        {
            for (int j = 0; j < dims; j++)
            {
                raw[j] = CentreSpread * scale[j] * rng.NextNormal();
            }

            var rotated = q * raw;
            for (int j = 0; j < dims; j++)
            {
                centres[c * dims + j] = (float)rotated[j];
            }
        }

        var cumulative = MixtureSampler.CumulativeWeights(clusters, ref rng);
        // One rotation and spectrum for every cluster: they share the noise map.
        return new MixtureSampler(dims, Enumerable.Repeat(noiseMap, clusters).ToArray(), centres, cumulative);
    }
}
