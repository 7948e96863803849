using System.IO.Compression;
using Squash.Core;
using Squash.Index.Build;

namespace Squash.Search.Tests;

/// <summary>Recall with default settings on real data (Debian's dataset-fashion-mnist; the test command installs it).</summary>
public class FashionMnistRecallTests
{
    private const string Folder = "/usr/share/datasets/fashion-mnist";

    private static float[] ReadImages(string file, int max, out int count)
    {
        using var gz = new GZipStream(File.OpenRead(Path.Combine(Folder, file)), CompressionMode.Decompress);
        using var ms = new MemoryStream();
        gz.CopyTo(ms);
        var b = ms.ToArray();
        int n = (b[4] << 24) | (b[5] << 16) | (b[6] << 8) | b[7];
        count = Math.Min(n, max);
        var data = new float[count * 784];
        for (int i = 0; i < data.Length; i++) data[i] = b[16 + i];
        return data;
    }

    [Fact]
    public void DefaultSettingsReachRecall95OnAFashionMnistSubset()
    {
        Assert.True(File.Exists(Path.Combine(Folder, "train-images-idx3-ubyte.gz")),
            "dataset-fashion-mnist is not installed: run the README's test command (it installs it) or apt-get install dataset-fashion-mnist");
        var data = ReadImages("train-images-idx3-ubyte.gz", 20_000, out int n);
        var queries = ReadImages("t10k-images-idx3-ubyte.gz", 300, out int nq);
        using var idx = new TestData.TempIndex(data, n, 784, new IndexBuildOptions());
        long hits = 0;
        var options = new SearchOptions();
        for (int i = 0; i < nq; i++)
        {
            var q = queries.AsSpan(i * 784, 784);
            var truth = TestData.BruteForce(data, n, 784, q, 10, Metric.L2).Select(t => t.Id).ToHashSet();
            var got = idx.Engine.Search(q, options);
            Assert.Equal(10, got.Ids.Length);
            hits += got.Ids.Count(truth.Contains);
        }
        double recall = hits / (10.0 * nq);
        Assert.True(recall >= 0.95, $"recall@10 = {recall:F4} with default settings, expected ≥ 0.95");
    }
}
