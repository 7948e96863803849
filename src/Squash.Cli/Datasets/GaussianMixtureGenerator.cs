using System.Numerics.Tensors;
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

    // Rows per independently seeded chunk; fixed so results never depend on scheduling.
    private const int ChunkRows = 4096;

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

        var model = Model.Create(dims, clusters > 0 ? clusters : DefaultClusters(n), seed);
        var baseSet = model.Sample(n, seed, BaseStream);
        var querySet = model.Sample(queries, seed, QueryStream);
        return (baseSet, querySet);
    }

    private sealed class Model
    {
        private readonly int _dims;

        // Row-major Q·diag(s): maps a standard normal vector straight to rotated cluster noise.
        private readonly float[] _noiseMap;

        // Rotated centres, row-major clusters × dims.
        private readonly float[] _centres;

        // Cumulative cluster weights, last entry 1.
        private readonly double[] _cumulative;

        private Model(int dims, float[] noiseMap, float[] centres, double[] cumulative)
        {
            _dims = dims;
            _noiseMap = noiseMap;
            _centres = centres;
            _cumulative = cumulative;
        }

        public static Model Create(int dims, int clusters, int seed)
        {
            var rng = new Xoshiro256(seed, ModelStream, 0);
            var scale = new double[dims];
            for (int j = 0; j < dims; j++)
            {
                scale[j] = 1.0 / Math.Sqrt(j + 1);
            }

            var q = SeparatedMixtureGenerator.HaarRotation(dims, ref rng);
            var noiseMap = new float[dims * dims];
            for (int row = 0; row < dims; row++)
            {
                for (int col = 0; col < dims; col++)
                {
                    noiseMap[row * dims + col] = (float)(q[row, col] * scale[col]);
                }
            }

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

            var cumulative = new double[clusters];
            double total = 0;
            for (int c = 0; c < clusters; c++)
            {
                total += 0.5 + rng.NextDouble();
                cumulative[c] = total;
            }

            for (int c = 0; c < clusters; c++)
            {
                cumulative[c] /= total;
            }

            cumulative[^1] = 1.0;
            return new Model(dims, noiseMap, centres, cumulative);
        }

        public VectorSet Sample(int count, int seed, ulong stream)
        {
            int dims = _dims;
            var data = new float[(long)count * dims];
            int chunks = (count + ChunkRows - 1) / ChunkRows;
            Parallel.For(0, chunks, chunk =>
            {
                var rng = new Xoshiro256(seed, stream, (ulong)chunk);
                Span<float> z = dims <= 1024 ? stackalloc float[dims] : new float[dims];
                int first = chunk * ChunkRows;
                int end = Math.Min(count, first + ChunkRows);
                for (int i = first; i < end; i++)
                {
                    int cluster = PickCluster(rng.NextDouble());
                    for (int j = 0; j < dims; j++)
                    {
                        z[j] = (float)rng.NextNormal();
                    }

                    var row = data.AsSpan(i * dims, dims);
                    var centre = _centres.AsSpan(cluster * dims, dims);
                    for (int j = 0; j < dims; j++)
                    {
                        row[j] = centre[j] + TensorPrimitives.Dot(_noiseMap.AsSpan(j * dims, dims), z);
                    }
                }
            });

            return new VectorSet(data, count, dims);
        }

        private int PickCluster(double u)
        {
            int index = Array.BinarySearch(_cumulative, u);
            // BinarySearch returns the complement of the first larger entry when u is not present.
            index = index >= 0 ? index + 1 : ~index;
            return Math.Min(index, _cumulative.Length - 1);
        }
    }
}
