using FsCheck.Xunit;
using Squash.Core.Partitioning;
using Squash.Core.Tests.Linalg;

namespace Squash.Core.Tests.Partitioning;

public class BalancedKMeansTests
{
    private static float[] RandomRows(int count, int dims, Random rng)
    {
        var rows = new float[count * dims];
        for (int i = 0; i < rows.Length; i++)
            rows[i] = (float)TestMatrices.Gaussian(rng);
        return rows;
    }

    /// <summary>Gaussian mixture: `clusters` centres spread by `spread`, noise sigma; labels say which centre.</summary>
    private static (float[] Rows, int[] Truth) Mixture(int count, int dims, int clusters, double spread, double sigma, Random rng, bool equalSizes)
    {
        var centres = new double[clusters * dims];
        for (int i = 0; i < centres.Length; i++)
            centres[i] = spread * TestMatrices.Gaussian(rng);
        var rows = new float[count * dims];
        var truth = new int[count];
        for (int r = 0; r < count; r++)
        {
            int c = equalSizes ? r % clusters : rng.Next(clusters);
            truth[r] = c;
            for (int k = 0; k < dims; k++)
                rows[r * dims + k] = (float)(centres[c * dims + k] + sigma * TestMatrices.Gaussian(rng));
        }
        return (rows, truth);
    }

    // Independent statement of the contract: sizes within [floor((1−b)N/P), ceil((1+b)N/P)], consistent with labels.
    private static void AssertValid(PartitionAssignment a, int count, int dims, int partitions, double balance)
    {
        Assert.Equal(partitions, a.Partitions);
        Assert.Equal(dims, a.Dimensions);
        Assert.Equal(partitions * dims, a.Centroids.Length);
        Assert.Equal(count, a.Labels.Length);
        Assert.Equal(partitions, a.Sizes.Length);
        var counted = new int[partitions];
        foreach (int l in a.Labels)
        {
            Assert.InRange(l, 0, partitions - 1);
            counted[l]++;
        }
        Assert.Equal(counted, a.Sizes);
        Assert.Equal(count, a.Sizes.Sum());
        int lo = (int)Math.Floor((1 - balance) * count / partitions);
        int hi = (int)Math.Ceiling((1 + balance) * count / partitions);
        foreach (int s in a.Sizes)
            Assert.InRange(s, lo, hi);
        Assert.All(a.Centroids, v => Assert.True(float.IsFinite(v)));
    }

    public static TheoryData<int, int, int> SizeCases()
    {
        var data = new TheoryData<int, int, int>();
        foreach (var (n, p) in new[] { (1, 1), (2, 2), (7, 1), (7, 7), (10, 3), (33, 5), (65, 64), (100, 7), (129, 129), (257, 16), (1000, 33), (3001, 64) })
        {
            foreach (int d in new[] { 1, 2, 7, 33 })
                data.Add(n, p, d);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(SizeCases))]
    public void SizesWithinBounds(int count, int partitions, int dims)
    {
        var rows = RandomRows(count, dims, new Random(count * 131 + partitions * 7 + dims));
        var options = new BalancedKMeansOptions { MaxIterations = 5 };
        var a = BalancedKMeans.Fit(rows, count, dims, partitions, seed: count + dims, options);
        AssertValid(a, count, dims, partitions, options.Balance);
    }

    [Property(MaxTest = 40)]
    public void SizesWithinBoundsProperty(int seed, ushort countRaw, byte partRaw, byte dimsRaw, byte balanceRaw)
    {
        int count = 1 + countRaw % 600;
        int partitions = 1 + partRaw % Math.Min(count, 40);
        int dims = 1 + dimsRaw % 20;
        double balance = balanceRaw % 4 * 0.1; // 0, 0.1, 0.2, 0.3
        // Skewed data (a few heavy clusters) stresses the capacity and repair steps.
        var (rows, _) = Mixture(count, dims, 3, 10, 1, new Random(seed), equalSizes: false);
        var options = new BalancedKMeansOptions { MaxIterations = 4, Balance = balance };
        var a = BalancedKMeans.Fit(rows, count, dims, partitions, seed, options);
        AssertValid(a, count, dims, partitions, balance);
    }

    [Fact]
    public void ZeroBalanceGivesExactSizes()
    {
        int count = 1001, partitions = 10, dims = 5;
        var (rows, _) = Mixture(count, dims, 4, 5, 1, new Random(2), equalSizes: false);
        var a = BalancedKMeans.Fit(rows, count, dims, partitions, 1, new BalancedKMeansOptions { Balance = 0 });
        Assert.All(a.Sizes, s => Assert.InRange(s, 100, 101));
        Assert.Equal(count, a.Sizes.Sum());
    }

    [Fact]
    public void DuplicateRowsStillBalance()
    {
        int count = 500, dims = 3, partitions = 20;
        var rows = new float[count * dims]; // all identical: every centroid is the same point
        var a = BalancedKMeans.Fit(rows, count, dims, partitions, 5);
        AssertValid(a, count, dims, partitions, 0.1);
    }

    [Fact]
    public void SinglePartitionIsTheMean()
    {
        int count = 50, dims = 7;
        var rows = RandomRows(count, dims, new Random(9));
        var a = BalancedKMeans.Fit(rows, count, dims, 1, 3);
        Assert.All(a.Labels, l => Assert.Equal(0, l));
        for (int k = 0; k < dims; k++)
        {
            double mean = 0;
            for (int r = 0; r < count; r++)
                mean += rows[r * dims + k];
            Assert.Equal(mean / count, a.Centroids[k], 5);
        }
    }

    [Fact]
    public void SameSeedSameResultRegardlessOfThreads()
    {
        int count = 4000, dims = 33, partitions = 24;
        var (rows, _) = Mixture(count, dims, 30, 3, 1, new Random(21), equalSizes: false);
        var a = BalancedKMeans.Fit(rows, count, dims, partitions, 42, new BalancedKMeansOptions { Threads = 1, SampleSize = 1500 });
        var b = BalancedKMeans.Fit(rows, count, dims, partitions, 42, new BalancedKMeansOptions { Threads = 2, SampleSize = 1500 });
        var c = BalancedKMeans.Fit(rows, count, dims, partitions, 42, new BalancedKMeansOptions { SampleSize = 1500 });
        Assert.Equal(a.Labels, b.Labels);
        Assert.Equal(a.Centroids, b.Centroids);
        Assert.Equal(a.Labels, c.Labels);
        Assert.Equal(a.Centroids, c.Centroids);

        var other = BalancedKMeans.Fit(rows, count, dims, partitions, 43, new BalancedKMeansOptions { SampleSize = 1500 });
        Assert.NotEqual(a.Centroids, other.Centroids); // the seed matters
    }

    [Theory]
    [InlineData(2, 8)]
    [InlineData(7, 16)]
    [InlineData(33, 10)]
    [InlineData(129, 5)]
    public void RecoversWellSeparatedClusters(int dims, int clusters)
    {
        int count = clusters * 150;
        var (rows, truth) = Mixture(count, dims, clusters, 20, 0.5, new Random(dims * 3 + clusters), equalSizes: true);
        var a = BalancedKMeans.Fit(rows, count, dims, clusters, 11);
        AssertValid(a, count, dims, clusters, 0.1);

        // Each partition must be exactly one true cluster (a bijection), i.e. purity 100%.
        var map = new int[clusters];
        Array.Fill(map, -1);
        for (int r = 0; r < count; r++)
        {
            int p = a.Labels[r];
            if (map[p] < 0)
                map[p] = truth[r];
            Assert.Equal(map[p], truth[r]);
        }
        Assert.Equal(clusters, map.Distinct().Count());
    }

    [Fact]
    public void MostRowsStayAtNearestCentroidOnMixture()
    {
        int count = 20000, dims = 16, partitions = 40;
        var (rows, _) = Mixture(count, dims, partitions, 3, 1, new Random(77), equalSizes: false);
        var a = BalancedKMeans.Fit(rows, count, dims, partitions, 1);
        AssertValid(a, count, dims, partitions, 0.1);
        Assert.True(NearestFraction(rows, dims, a) >= 0.85);
    }

    [Fact]
    public void Dims784Case()
    {
        int count = 2500, dims = 784, partitions = 16;
        var (rows, truth) = Mixture(count, dims, partitions, 1, 1, new Random(784), equalSizes: true);
        var a = BalancedKMeans.Fit(rows, count, dims, partitions, 5);
        AssertValid(a, count, dims, partitions, 0.1);
        Assert.True(NearestFraction(rows, dims, a) >= 0.95);
        Assert.Equal(partitions, a.Labels.Select((l, r) => (l, truth[r])).Distinct().Count()); // clusters recovered
    }

    [Fact]
    public void ProgressReachesOne()
    {
        var rows = RandomRows(300, 4, new Random(1));
        var seen = new List<double>();
        BalancedKMeans.Fit(rows, 300, 4, 5, 1, null, new SyncProgress(seen));
        Assert.NotEmpty(seen);
        Assert.Equal(1.0, seen[^1], 9);
        for (int i = 1; i < seen.Count; i++)
            Assert.True(seen[i] >= seen[i - 1]);
    }

    [Fact]
    public void BadArgumentsRejected()
    {
        var rows = new float[10 * 2];
        Assert.Throws<ArgumentException>(() => BalancedKMeans.Fit(rows, 0, 2, 1, 0));
        Assert.Throws<ArgumentException>(() => BalancedKMeans.Fit(rows, 10, 2, 11, 0));
        Assert.Throws<ArgumentException>(() => BalancedKMeans.Fit(rows, 10, 2, 0, 0));
        Assert.Throws<ArgumentException>(() => BalancedKMeans.Fit(rows, 11, 2, 2, 0));
        Assert.Throws<ArgumentException>(() => BalancedKMeans.Fit(rows, 10, 0, 2, 0));
        Assert.Throws<ArgumentException>(() => BalancedKMeans.Fit(rows, 10, 2, 2, 0, new BalancedKMeansOptions { Balance = 1 }));
        Assert.Throws<ArgumentException>(() => BalancedKMeans.Fit(rows, 10, 2, 2, 0, new BalancedKMeansOptions { Balance = -0.1 }));
        Assert.Throws<ArgumentException>(() => BalancedKMeans.Fit(rows, 10, 2, 2, 0, new BalancedKMeansOptions { Threads = -1 }));
        var nan = new float[20];
        nan[5] = float.NaN;
        Assert.Throws<ArgumentException>(() => BalancedKMeans.Fit(nan, 10, 2, 2, 0));
    }

    private static double NearestFraction(float[] rows, int dims, PartitionAssignment a)
    {
        int count = a.Labels.Length, good = 0;
        for (int r = 0; r < count; r++)
        {
            int best = 0;
            double bestD = double.MaxValue;
            for (int p = 0; p < a.Partitions; p++)
            {
                double s = 0;
                for (int k = 0; k < dims; k++)
                {
                    double d = rows[r * dims + k] - a.Centroids[p * dims + k];
                    s += d * d;
                }
                if (s < bestD)
                {
                    bestD = s;
                    best = p;
                }
            }
            if (best == a.Labels[r])
                good++;
        }
        return (double)good / count;
    }

    private sealed class SyncProgress(List<double> seen) : IProgress<double>
    {
        public void Report(double value) => seen.Add(value);
    }
}
