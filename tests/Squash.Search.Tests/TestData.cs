using Squash.Core;
using Squash.Index.Build;
using Squash.Storage;

namespace Squash.Search.Tests;

/// <summary>Seeded test data and throwaway indexes in temp folders (the real folder store, not a mock).</summary>
public static class TestData
{
    /// <summary>Gaussian clusters with a decaying per-axis spread, so the KLT has something to find.</summary>
    public static float[] Clustered(int n, int dims, int clusters, int seed)
    {
        var rng = new Random(seed);
        var centres = new float[clusters * dims];
        for (int i = 0; i < centres.Length; i++) centres[i] = (float)(Gaussian(rng) * 4 / Math.Sqrt(1 + i % dims));
        var data = new float[(long)n * dims];
        for (int i = 0; i < n; i++)
        {
            int c = rng.Next(clusters);
            for (int j = 0; j < dims; j++)
                data[i * dims + j] = centres[c * dims + j] + (float)(Gaussian(rng) / Math.Sqrt(1 + j));
        }
        return data;
    }

    /// <summary>Uniform vectors in [0, 1), and <paramref name="queries"/> distinct rows of them (drawn by the seed) copied out as base-sample queries.</summary>
    public static (float[] Data, int[] Rows, float[] Queries) UniformWithRowQueries(int n, int dims, int queries, int seed)
    {
        var rng = new Random(seed);
        var data = new float[n * dims];
        for (int i = 0; i < data.Length; i++) data[i] = (float)rng.NextDouble();
        var rows = Enumerable.Range(0, n).OrderBy(_ => rng.Next()).Take(queries).ToArray();
        var querySet = new float[queries * dims];
        for (int q = 0; q < queries; q++) data.AsSpan(rows[q] * dims, dims).CopyTo(querySet.AsSpan(q * dims));
        return (data, rows, querySet);
    }

    public static double Gaussian(Random rng)
    {
        double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }

    public sealed class TempIndex : IDisposable
    {
        /// <param name="calibrate">Build as <c>squash build</c> does, with the recall calibration (on <paramref name="calibration"/>, or a base sample).</param>
        public TempIndex(float[] data, int n, int dims, IndexBuildOptions options, bool calibrate = false, CalibrationQueries? calibration = null,
            int calibrationSize = RecallCalibrator.DefaultQueries, int? exactQueries = null)
        {
            Folder = Path.Combine(Path.GetTempPath(), "squash-test-" + Guid.NewGuid().ToString("N"));
            Store = new IndexStore(new FolderBlobStore(Folder));
            CalibratedBuild.BuildAndPublishAsync(Store, data, n, dims, options, calibration: calibration, calibrate: calibrate, sampleSize: calibrationSize, exactQueries: exactQueries).GetAwaiter().GetResult();
            Index = OpenedIndex.OpenAsync(Store).GetAwaiter().GetResult();
            Engine = new SearchEngine(Index);
        }

        public string Folder { get; }
        public IndexStore Store { get; }
        public OpenedIndex Index { get; }
        public SearchEngine Engine { get; }

        public void Dispose()
        {
            try { Directory.Delete(Folder, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>Brute-force top-k in the user's metric: (id, distance) ascending, ties by id.</summary>
    public static (long Id, double Distance)[] BruteForce(float[] data, int n, int dims, ReadOnlySpan<float> q, int k, Metric metric)
    {
        var all = new (long Id, double Distance)[n];
        double qn = 0;
        foreach (float v in q) qn += (double)v * v;
        for (int i = 0; i < n; i++)
        {
            double dot = 0, xn = 0, l2 = 0;
            for (int j = 0; j < dims; j++)
            {
                double x = data[i * dims + j];
                dot += x * q[j];
                xn += x * x;
                l2 += (x - q[j]) * (x - q[j]);
            }
            all[i] = (i, metric switch
            {
                Metric.L2 => Math.Sqrt(l2),
                Metric.Cosine => 1 - dot / Math.Sqrt(xn * qn),
                _ => -dot,
            });
        }
        Array.Sort(all, (a, b) => a.Distance != b.Distance ? a.Distance.CompareTo(b.Distance) : a.Id.CompareTo(b.Id));
        return all[..Math.Min(k, n)];
    }
}
