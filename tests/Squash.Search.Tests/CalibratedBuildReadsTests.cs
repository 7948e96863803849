using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.Storage;
using Squash.Testing;

namespace Squash.Search.Tests;

/// <summary>
/// An in-process build calibrates the segments it has just written from the bytes it wrote: none of the version's blobs is
/// read back (CalibrateByPartitionTests checks that the calibration equals one over the version read from the store).
/// </summary>
public sealed class CalibratedBuildReadsTests
{
    [Theory]
    [InlineData(4)]
    [InlineData(9)]
    public async Task ABuildCalibratesWhatItWroteWithoutReadingItBack(int seed)
    {
        const int n = 3000, dims = 10;
        var data = TestData.Clustered(n, dims, clusters: 12, seed: seed);
        var rng = new Random(seed);
        var table = AttributeReader.ReadJsonLines(new StringReader(string.Concat(Enumerable.Range(0, n).Select(i =>
            $"{{\"attributes\":{{\"label\":{i % 5},\"u\":{rng.Next(100_000)}}}}}\n"))), "attrs.jsonl");
        var folder = Path.Combine(Path.GetTempPath(), "squash-test-" + Guid.NewGuid().ToString("N"));
        try
        {
            var counting = new RequestCountingStore(new FolderBlobStore(folder), name => name.Contains("versions/", StringComparison.Ordinal));
            var store = new IndexStore(counting);
            var manifest = await CalibratedBuild.BuildAndPublishAsync(store, data, n, dims, new IndexBuildOptions { Partitions = 20, Seed = seed, Attributes = table });

            Assert.NotNull(manifest.Calibration);
            Assert.NotNull(manifest.Calibration.Filtered);
            Assert.True(counting.Reads + counting.RangedReads == 0, $"seed {seed}: the build read {counting.Reads} blobs and {counting.RangedReads} ranges of its version back");
            // The counter does see a version's reads: opening the published version reads every partition.
            var opened = await OpenedIndex.OpenAsync(store);
            Assert.Equal(manifest.Version, opened.Manifest.Version);
            Assert.True(counting.Reads + counting.RangedReads >= manifest.Partitions.Count, $"{counting.Reads} reads for {manifest.Partitions.Count} partitions");
        }
        finally
        {
            try { Directory.Delete(folder, recursive: true); } catch (IOException) { }
        }
    }
}
