using Squash.Core.Linalg;
using Squash.Core.Partitioning;
using Squash.Index.Build;
using Squash.Index.Model;

namespace Squash.Index.Tests.Build;

/// <summary>
/// The build's training step: the codes' subspace follows the variance inside partitions, every row joins its nearest
/// centroid however the rows are chunked, and the training sample leaves held-out rows out.
/// </summary>
public class PartitionTrainingTests
{
    private sealed class MemorySink : ISegmentSink
    {
        public Dictionary<string, byte[]> Segments { get; } = [];

        public Task WriteAsync(string name, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            lock (Segments) Segments[name] = data.ToArray();
            return Task.CompletedTask;
        }
    }

    private static double Gaussian(Random rng)
    {
        double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }

    [Fact]
    public async Task KeptSubspaceIsTheWithinPartitionAxesWhenTheClustersLieFarApartOnAnother()
    {
        // Two clusters at ±50 on axis 0 (99.8 % of the total variance); inside them, variance 4 on axis 1 and
        // 1 on axis 2, 0.01 elsewhere. 90 % of the within variance needs axes 1 and 2; axis 0 separates only partitions.
        const int n = 4_000, d = 8, seed = 5;
        var rng = new Random(seed);
        var x = new float[n * d];
        for (int i = 0; i < n; i++)
        {
            x[i * d] = (i % 2 == 0 ? 50 : -50) + (float)(0.1 * Gaussian(rng));
            x[i * d + 1] = (float)(2 * Gaussian(rng));
            x[i * d + 2] = (float)Gaussian(rng);
            for (int j = 3; j < d; j++) x[i * d + j] = (float)(0.1 * Gaussian(rng));
        }
        var sink = new MemorySink();
        var manifest = await IndexBuilder.BuildAsync(x, n, d, new IndexBuildOptions { Partitions = 2, Seed = seed }, "v1", sink);

        Assert.Equal(2, manifest.GlobalDimensions);
        var routing = RoutingData.FromSegment(sink.Segments[manifest.Routing.Name], manifest.Routing.Name, manifest);
        var basis = routing.GlobalTransform.Basis;
        for (int r = 0; r < 2; r++)
        {
            double inside = basis[r * d + 1] * basis[r * d + 1] + basis[r * d + 2] * basis[r * d + 2];
            Assert.True(inside > 0.999, $"kept axis {r} has only {inside:F4} of its weight on the within-cluster axes");
        }
    }

    [Fact]
    public void WithinPartitionCovarianceEqualsTheSizeWeightedMeanOfThePartitionCovariances()
    {
        const int n = 600, d = 5, partitions = 4;
        var rng = new Random(9);
        var x = new float[n * d];
        var labels = new int[n];
        for (int i = 0; i < n; i++)
        {
            labels[i] = rng.Next(partitions);
            for (int j = 0; j < d; j++) x[i * d + j] = (float)(10 * labels[i] * (j + 1) + (j + 1) * Gaussian(rng));
        }
        var (mean, total) = Covariance.Compute(x, n, d);

        var within = PartitionTraining.WithinPartitionCovariance(total, mean, x, n, d, labels, partitions);

        var expected = new double[d * d];
        for (int p = 0; p < partitions; p++)
        {
            var members = Enumerable.Range(0, n).Where(i => labels[i] == p).ToArray();
            var (_, cov) = Covariance.Compute(x, n, d, members);
            for (int e = 0; e < d * d; e++) expected[e] += cov[e] * members.Length / n;
        }
        for (int e = 0; e < d * d; e++)
            Assert.True(Math.Abs(within[e] - expected[e]) <= 1e-9 * (1 + Math.Abs(expected[e])), $"entry {e}: {within[e]} vs {expected[e]}");
    }

    [Theory]
    [InlineData(1, 1, 7)]
    [InlineData(500, 3, 33)]
    [InlineData(2_000, 17, 65)]
    public void NearestCentroidLabelsEqualABruteForceArgminWhateverTheChunking(int count, int dims, int partitions)
    {
        var rng = new Random(count + dims);
        var rows = Enumerable.Range(0, count * dims).Select(_ => (float)Gaussian(rng)).ToArray();
        var centroids = Enumerable.Range(0, partitions * dims).Select(_ => (float)Gaussian(rng)).ToArray();
        // Two equal centroids: the lower index must win the tie.
        Array.Copy(centroids, 0, centroids, dims, dims);
        var whole = new int[count];
        NearestCentroid.Assign(rows, count, dims, centroids, partitions, whole);
        var chunked = new int[count];
        for (int start = 0; start < count; start += 97)
        {
            int n = Math.Min(97, count - start);
            NearestCentroid.Assign(rows.AsSpan(start * dims, n * dims), n, dims, centroids, partitions, chunked.AsSpan(start, n), threads: 1);
        }
        Assert.Equal(whole, chunked);
        for (int i = 0; i < count; i++)
        {
            var distances = Enumerable.Range(0, partitions).Select(p =>
                Enumerable.Range(0, dims).Sum(j => Math.Pow(rows[i * dims + j] - centroids[p * dims + j], 2))).ToArray();
            double best = distances.Min();
            Assert.NotEqual(1, whole[i]); // centroid 1 duplicates centroid 0
            // Float rounding of ‖x‖² + ‖c‖² − 2x·c may pick a centroid within a hair of the best, never a farther one.
            Assert.True(distances[whole[i]] <= best * (1 + 1e-5) + 1e-5, $"row {i}: label {whole[i]} at {distances[whole[i]]}, best {best}");
        }
    }

    [Fact]
    public void DropEmptyRenumbersTheChosenPartitionsInOrder()
    {
        int[] labels = [4, 0, 4, 2, 0];
        Assert.Equal(3, IndexBuilder.DropEmpty(labels, 5));
        Assert.Equal([2, 0, 2, 1, 0], labels);
    }

    [Fact]
    public void TrainingRowsAreAnEvenSampleWithoutTheHeldOutRows()
    {
        var rows = PartitionTraining.TrainingRows(1_000, 8, 10, heldOut: [0, 1, 500]);
        Assert.Equal(997, rows.Length);
        Assert.DoesNotContain(0, rows);
        Assert.DoesNotContain(500, rows);
        Assert.Equal(rows.Order().ToArray(), rows);
        // Capped by the float budget at high dimension (64 M floats / 4,096 dims = 16,384 rows).
        Assert.Equal(16_384, PartitionTraining.TrainingRows(100_000, 4_096, 10, null).Length);
    }

    [Fact]
    public async Task EveryRowIsInThePartitionOfItsNearestCentroidAndNoPartitionIsEmpty()
    {
        const int n = 3_000, d = 6, seed = 3;
        var rng = new Random(seed);
        var x = Enumerable.Range(0, n * d).Select(i => (float)(Gaussian(rng) + 5 * ((i / d) % 3))).ToArray();
        var options = new IndexBuildOptions { Partitions = 12, Seed = seed };
        var sink = new MemorySink();
        var manifest = await IndexBuilder.BuildAsync(x, n, d, options, "v1", sink);

        var rows = PartitionTraining.TrainingRows(n, d, 12, null);
        var training = rows.SelectMany(r => x.Skip(r * d).Take(d)).ToArray();
        var trained = PartitionTraining.Fit(training, rows.Length, d, 12, options);
        var labels = new int[n];
        trained.Assign(x, n, labels);
        int kept = IndexBuilder.DropEmpty(labels, 12);

        Assert.Equal(kept, manifest.Partitions.Count);
        Assert.All(manifest.Partitions, p => Assert.True(p.Count > 0, $"partition {p.Id} is empty"));
        var routing = RoutingData.FromSegment(sink.Segments[manifest.Routing.Name], manifest.Routing.Name, manifest);
        Assert.Equal(Enumerable.Range(0, kept).Select(p => labels.Count(l => l == p)).ToArray(), routing.PartitionSizes);
    }

    /// <summary>The sample as first written: every eligible row listed (N ints), then picked evenly.</summary>
    private static int[] ListedTrainingRows(int count, int dims, int partitions, int[] heldOut)
    {
        var held = new HashSet<int>(heldOut);
        long cap = Math.Max(4L * partitions, Math.Min(PartitionTraining.MaxTrainingRows, (64L << 20) / dims));
        var eligible = Enumerable.Range(0, count).Where(r => !held.Contains(r)).ToArray();
        int size = (int)Math.Min(eligible.Length, cap);
        return Enumerable.Range(0, size).Select(i => eligible[(long)i * eligible.Length / size]).ToArray();
    }

    [Theory]
    [InlineData(1_000, 8, 3)]
    [InlineData(250_000, 16, 5)]
    [InlineData(900_000, 128, 7)]
    public void TheSampleIsFoundWithoutListingTheEligibleRows(int count, int dims, int seed)
    {
        var rng = new Random(seed);
        // Held-out rows in no order, clustered at both ends and spread in between.
        var held = new[] { 0, 1, 2, count - 1, count - 2 }.Concat(Enumerable.Range(0, 300).Select(_ => rng.Next(count))).Distinct().OrderBy(_ => rng.Next()).ToArray();
        Assert.Equal(ListedTrainingRows(count, dims, 10, held), PartitionTraining.TrainingRows(count, dims, 10, held));
    }

    /// <summary>The two d×d eigendecompositions (minutes at 4096 dims before, seconds now) report their progress as stages.</summary>
    [Fact]
    public void FitReportsTheEigendecompositionsAsStages()
    {
        int n = 300, d = 200;
        var rng = new Random(8);
        var x = Enumerable.Range(0, n * d).Select(i => (float)(rng.NextDouble() + 5 * ((i / d) % 3))).ToArray();
        var seen = new List<BuildProgress>();
        var progress = new ListProgress(seen);
        PartitionTraining.Fit(x, n, d, 3, new IndexBuildOptions { Partitions = 3 }, eigenProgress: progress);
        var stages = seen.Select(p => p.Stage).Distinct().ToArray();
        Assert.Equal([PartitionTraining.TotalEigenStage, PartitionTraining.WithinEigenStage], stages);
        foreach (var stage in stages)
        {
            var fractions = seen.Where(p => p.Stage == stage).Select(p => p.Fraction).ToArray();
            Assert.True(fractions.Length >= 10, $"{stage}: only {fractions.Length} reports");
            Assert.Equal(1.0, fractions[^1]);
            Assert.All(fractions, f => Assert.InRange(f, 0, 1));
        }
    }

    private sealed class ListProgress(List<BuildProgress> seen) : IProgress<BuildProgress>
    {
        public void Report(BuildProgress value)
        {
            lock (seen) seen.Add(value);
        }
    }
}
