using Squash.Core.Vectors;
using MathNet.Numerics.LinearAlgebra;

namespace Squash.Cli.Datasets;

/// <summary>
/// Synthetic data on which a global principal-component truncation loses neighbours: a mixture of far-apart
/// Gaussian clusters, each with a heavy-tailed spectrum of its own and its own random orientation.
/// </summary>
/// <remarks>
/// Model, for K clusters in d dimensions, spectrum exponent a and separation S:
/// <list type="bullet">
/// <item>within-cluster variance along a cluster's i-th principal axis is λ_i = i^-a (i = 1..d), so the total
/// within-cluster variance is W = Σ λ_i, the mean squared distance of a point from its centre;</item>
/// <item>each cluster k has its own Haar-random rotation Q_k; a point of cluster k is c_k + Q_k·diag(√λ)·z with
/// z ~ N(0, I);</item>
/// <item>centres are c_k ~ N(0, σ²·I) with σ² = S²·W / (2d), so the expected distance between two centres is
/// S times a cluster's RMS radius √W;</item>
/// <item>clusters get weights drawn uniformly from [0.5, 1.5).</item>
/// </list>
/// The between-cluster variance S²·W/2 lies in the K − 1 directions the centres span and dominates the global
/// variance once S is a few units, so a global PCA reaches 95 % of the energy in far fewer dimensions than a
/// single cluster needs: the within-cluster directions, which decide who the nearest neighbours are, are spread
/// over all d axes because every cluster is rotated differently. Queries come from the same mixture with an
/// independent random stream, so they are not copies of base points. Rows are generated in fixed chunks, each with
/// its own seeded stream, so the output for a seed does not depend on the thread count (on the same hardware).
/// </remarks>
public static class SeparatedMixtureGenerator
{
    /// <summary>Expected centre-to-centre distance in units of a cluster's RMS radius.</summary>
    public const double DefaultSeparation = 8.0;

    /// <summary>Exponent a of the within-cluster spectrum λ_i = i^-a.</summary>
    public const double DefaultSpectrumDecay = 1.2;

    public const int DefaultClusters = 64;

    /// <summary>
    /// Cap on clusters × dims², the floats held by the per-cluster rotations (512 MiB); above it the rotations
    /// alone would crowd out the data.
    /// </summary>
    public const long MaxRotationValues = 1L << 27;

    private const ulong ModelStream = 0;
    private const ulong BaseStream = 1;
    private const ulong QueryStream = 2;
    private const ulong RotationStream = 3;

    /// <summary>Base and query vectors with the cluster each row was drawn from.</summary>
    public sealed record Result(VectorSet Base, VectorSet Queries, int[] BaseClusters, int[] QueryClusters);

    public static Result Generate(
        int n, int dims, int queries, int seed, int clusters = DefaultClusters,
        double separation = DefaultSeparation, double spectrumDecay = DefaultSpectrumDecay)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(dims, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(dims, VectorFile.MaxDimensions);
        ArgumentOutOfRangeException.ThrowIfNegative(queries);
        ArgumentOutOfRangeException.ThrowIfLessThan(clusters, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(separation);
        ArgumentOutOfRangeException.ThrowIfNegative(spectrumDecay);
        if (!double.IsFinite(separation) || !double.IsFinite(spectrumDecay))
        {
            throw new ArgumentOutOfRangeException(nameof(separation), "separation and spectrum decay must be finite.");
        }

        if ((long)clusters * dims * dims > MaxRotationValues)
        {
            throw new ArgumentOutOfRangeException(
                nameof(clusters), $"{clusters} rotations of {dims} x {dims} exceed {MaxRotationValues} values.");
        }

        if ((long)n * dims > Array.MaxLength || (long)queries * dims > Array.MaxLength)
        {
            throw new ArgumentOutOfRangeException(nameof(n), $"{n} x {dims} values do not fit in one array.");
        }

        var model = CreateModel(dims, clusters, separation, spectrumDecay, seed);
        var (baseSet, baseClusters) = model.Sample(n, seed, BaseStream);
        var (querySet, queryClusters) = model.Sample(queries, seed, QueryStream);
        return new Result(baseSet, querySet, baseClusters, queryClusters);
    }

    /// <summary>
    /// Haar-random orthogonal matrix: QR of a Gaussian matrix with R's diagonal signs folded into Q (without
    /// the sign fix QR's convention biases Q away from a uniform rotation). Fills the Gaussian column by column.
    /// The QR is <see cref="HouseholderQr"/>, which gives MathNet's Q and R bit for bit, so a seed gives the rotation it
    /// always gave (recorded benchmark figures were measured on this data), in seconds instead of minutes at 4096 dims.
    /// </summary>
    internal static Matrix<double> HaarRotation(int dims, ref Xoshiro256 rng)
    {
        // Column-major, as MathNet stores a dense matrix and as the Gaussian was always drawn.
        var gaussian = new double[(long)dims * dims];
        for (int i = 0; i < gaussian.Length; i++)
        {
            gaussian[i] = rng.NextNormal();
        }

        var (q, rDiagonal) = HouseholderQr.Factor(gaussian, dims);
        for (int col = 0; col < dims; col++)
        {
            if (rDiagonal[col] < 0)
            {
                for (int row = 0; row < dims; row++)
                {
                    q[(long)col * dims + row] = -q[(long)col * dims + row];
                }
            }
        }

        return Matrix<double>.Build.Dense(dims, dims, q);
    }

    private static MixtureSampler CreateModel(int dims, int clusters, double separation, double decay, int seed)
    {
        var stddev = new double[dims];
        double withinVariance = 0;
        for (int i = 0; i < dims; i++)
        {
            double variance = Math.Pow(i + 1, -decay);
            stddev[i] = Math.Sqrt(variance);
            withinVariance += variance;
        }

        // Each rotation has its own stream so they can be built in parallel and still depend only on the seed.
        var noiseMaps = new float[clusters][];
        Parallel.For(0, clusters, cluster =>
        {
            var rotationRng = new Xoshiro256(seed, RotationStream, (ulong)cluster);
            var q = HaarRotation(dims, ref rotationRng);
            noiseMaps[cluster] = MixtureSampler.NoiseMap(q, stddev);
        });

        var rng = new Xoshiro256(seed, ModelStream, 0);
        double centreStddev = separation * Math.Sqrt(withinVariance / (2.0 * dims));
        var centres = new float[clusters * dims];
        for (int i = 0; i < centres.Length; i++)
        {
            centres[i] = (float)(centreStddev * rng.NextNormal());
        }

        var cumulative = MixtureSampler.CumulativeWeights(clusters, ref rng);
        return new MixtureSampler(dims, noiseMaps, centres, cumulative);
    }
}
