using FsCheck.Xunit;
using Squash.Core.Partitioning;
using Squash.Core.Tests.Linalg;

namespace Squash.Core.Tests.Partitioning;

public class CentroidTableTests
{
    private static unsafe void CheckNearest(int count, int dims, int partitions, int m, int seed, bool integerValued)
    {
        var rng = new Random(seed);
        // Integer-valued data makes float distances exact, so ties and ordering can be checked strictly.
        float Next() => integerValued ? rng.Next(-3, 4) : (float)TestMatrices.Gaussian(rng);
        var rows = new float[count * dims];
        var cents = new float[partitions * dims];
        for (int i = 0; i < rows.Length; i++)
            rows[i] = Next();
        for (int i = 0; i < cents.Length; i++)
            cents[i] = Next();

        var table = new CentroidTable(cents, partitions, dims);
        var idx = new int[count * m];
        var dist = new float[count * m];
        fixed (float* p = rows)
            table.Nearest(p, null, count, m, idx, dist, new ParallelOptions());

        for (int r = 0; r < count; r++)
        {
            var exact = new (double D, int C)[partitions];
            for (int c = 0; c < partitions; c++)
            {
                double s = 0;
                for (int k = 0; k < dims; k++)
                {
                    double d = rows[r * dims + k] - cents[c * dims + k];
                    s += d * d;
                }
                exact[c] = (s, c);
            }
            Array.Sort(exact);
            for (int t = 0; t < m; t++)
            {
                int got = idx[r * m + t];
                if (integerValued)
                {
                    Assert.Equal(exact[t].C, got);
                    Assert.Equal(exact[t].D, dist[r * m + t]);
                }
                else
                {
                    // Rounding may swap near-ties; the distance at each rank must still match.
                    Assert.True(Math.Abs(exact[t].D - dist[r * m + t]) <= 1e-4 * (1 + exact[t].D), $"row {r} rank {t}");
                }
                if (t > 0)
                    Assert.True(dist[r * m + t - 1] <= dist[r * m + t]);
            }
        }
    }

    [Theory]
    [InlineData(1, 1, 1, 1)]
    [InlineData(5, 2, 3, 3)]
    [InlineData(13, 7, 17, 8)]
    [InlineData(7, 33, 16, 16)]
    [InlineData(20, 65, 40, 8)]
    [InlineData(9, 129, 33, 1)]
    public void NearestMatchesBruteForce(int count, int dims, int partitions, int m)
    {
        CheckNearest(count, dims, partitions, m, count + dims + partitions, integerValued: true);
        CheckNearest(count, dims, partitions, m, count * dims + partitions, integerValued: false);
    }

    [Property(MaxTest = 30)]
    public void NearestMatchesBruteForceProperty(int seed, byte countRaw, byte dimsRaw, byte partRaw, byte mRaw)
    {
        int partitions = 1 + partRaw % 50;
        CheckNearest(1 + countRaw % 20, 1 + dimsRaw % 40, partitions, 1 + mRaw % partitions, seed, integerValued: true);
    }
}
