using Squash.Core.Vectors;
using System.Numerics.Tensors;
using MathNet.Numerics.LinearAlgebra;

namespace Squash.Cli.Datasets;

/// <summary>
/// A Gaussian mixture ready to sample, shared by the generators: per cluster a noise map (row-major Q·diag(σ), which
/// turns a standard normal vector straight into that cluster's noise; clusters may share one), the centres and the
/// cumulative weights. Rows are drawn in fixed chunks, each with its own seeded stream, so the output for a seed never
/// depends on scheduling.
/// </summary>
internal sealed class MixtureSampler(int dims, float[][] noiseMaps, float[] centres, double[] cumulative)
{
    // Rows per independently seeded chunk; fixed so results never depend on scheduling.
    private const int ChunkRows = 4096;

    /// <summary>Q·diag(scale), row-major, in float.</summary>
    public static float[] NoiseMap(Matrix<double> q, double[] scale)
    {
        int dims = scale.Length;
        var map = new float[dims * dims];
        for (int row = 0; row < dims; row++)
        {
            for (int col = 0; col < dims; col++)
            {
                map[row * dims + col] = (float)(q[row, col] * scale[col]);
            }
        }

        return map;
    }

    /// <summary>Cluster weights drawn uniformly from [0.5, 1.5), as cumulative shares ending at exactly 1.</summary>
    public static double[] CumulativeWeights(int clusters, ref Xoshiro256 rng)
    {
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
        return cumulative;
    }

    /// <summary><paramref name="count"/> rows and the cluster each came from.</summary>
    public (VectorSet Vectors, int[] Clusters) Sample(int count, int seed, ulong stream)
    {
        var data = new float[(long)count * dims];
        var labels = new int[count];
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
                labels[i] = cluster;
                for (int j = 0; j < dims; j++)
                {
                    z[j] = (float)rng.NextNormal();
                }

                var row = data.AsSpan(i * dims, dims);
                var centre = centres.AsSpan(cluster * dims, dims);
                var map = noiseMaps[cluster];
                for (int j = 0; j < dims; j++)
                {
                    row[j] = centre[j] + TensorPrimitives.Dot(map.AsSpan(j * dims, dims), z);
                }
            }
        });

        return (new VectorSet(data, count, dims), labels);
    }

    private int PickCluster(double u)
    {
        int index = Array.BinarySearch(cumulative, u);
        // BinarySearch returns the complement of the first larger entry when u is not present.
        index = index >= 0 ? index + 1 : ~index;
        return Math.Min(index, cumulative.Length - 1);
    }
}
