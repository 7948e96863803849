using System.Globalization;
using System.Text.Json;
using Squash.Core;
using Squash.Index.Build;
using Squash.Index.Format;
using Squash.Index.Model;
using Squash.Search.Tests.Filters;
using Squash.Search.Writes;
using Squash.Storage;
using Squash.Storage.Writes;
using Squash.Testing;

namespace Squash.Search.Tests.Writes;

/// <summary>
/// Opening a whole version that ingest has extended (what the calibration job and a rebuild read): every partition is its
/// base segments, appended segments in several runs' packs and a deletion mask, and the open reads each blob in one
/// request instead of one per segment, giving exactly the rows, codes and attributes that reading partitions one by one
/// gives. A damaged pack is still a named error.
/// </summary>
public sealed class WholeVersionReadTests : IDisposable
{
    private const int N = 1800, Dims = 16;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-whole-version-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    /// <summary>A built index with attributes, extended by several ingest runs of replacements, new rows and deletes.</summary>
    private async Task<(RequestCountingStore Counting, IndexManifest Extended)> ExtendedAsync()
    {
        var counting = new RequestCountingStore(new FolderBlobStore(_root));
        var store = new IndexStore(counting, "whole");
        var data = TestData.Clustered(N, Dims, clusters: 6, seed: 71);
        await IndexPublisher.BuildAndPublishAsync(store, data, N, Dims, new IndexBuildOptions
        {
            Partitions = 6, Seed = 72, Attributes = FilterTestData.Table(N, seed: 73, out _),
        });
        var log = new WriteLog(store.Blobs, "whole");
        var rng = new Random(74);
        for (int run = 0; run < 4; run++)
        {
            var upserts = Enumerable.Range(0, 30).Select(i => new UpsertItem(rng.Next(2) == 0 ? $"new-{run}-{i}" : $"v{rng.Next(N)}",
                // Near a stored row, so that the new rows land in every partition.
                data.AsSpan(rng.Next(N) * Dims, Dims).ToArray().Select(x => x + 0.01f * (float)rng.NextDouble()).ToArray(),
                JsonDocument.Parse(string.Create(CultureInfo.InvariantCulture,
                    $"{{\"price\":{rng.Next(900)},\"label\":{rng.Next(10)},\"colour\":\"{FilterTestData.Colours[rng.Next(FilterTestData.Colours.Length)]}\",\"tags\":[\"a\"]}}")).RootElement)).ToList();
            var deletes = Enumerable.Range(0, 5).Select(_ => $"v{rng.Next(N)}").ToArray();
            await log.AppendAsync(new WriteBatch { CreatedUtc = DateTimeOffset.UnixEpoch, Upserts = upserts, Deletes = deletes }, null, "", 0);
            Assert.True((await LogIngest.RunAsync(store, log)).Published, $"ingest run {run} did not publish");
        }
        var m = await store.OpenCurrentAsync();
        Assert.True(m.Partitions.Count(p => p.IsComposite && p.Appended is { Count: > 1 } && p.Deleted is not null) >= 2,
            "the runs left too few partitions with several appended segments and a mask to test with");
        return (counting, m);
    }

    [Fact]
    public async Task AWholeOpenReadsEachBlobOnceAndEqualsReadingPartitionsOneByOne()
    {
        var (counting, m) = await ExtendedAsync();
        var store = new IndexStore(counting, "whole");
        int blobs = IndexStore.BlobsNamedBy(m).Select(s => store.BlobName(m, s)).Distinct().Count();
        int segments = IndexStore.BlobsNamedBy(m).Count();
        Assert.True(segments > 2 * blobs, $"{segments} segments in {blobs} blobs: too few shared blobs to tell one request per blob from one per segment");

        counting.Reads = counting.RangedReads = 0;
        var whole = await OpenedIndex.OpenUnpublishedAsync(store, m);
        int wholeReads = counting.Reads + counting.RangedReads;
        // The routing segment is read on its own when the index opens (it may sit in a pack beside partitions' segments).
        Assert.True(wholeReads <= blobs + 1, $"the whole open sent {wholeReads} requests for {blobs} blobs ({segments} segments)");

        var oneByOne = await OpenedIndex.OpenUnpublishedAsync(new IndexStore(new FolderBlobStore(_root), "whole"), m, loadAll: false);
        for (int p = 0; p < m.Partitions.Count; p++)
        {
            Assert.True(whole.IsLoaded(p), $"partition {p} was not loaded");
            var (a, b) = (whole.Codes(p), oneByOne.Codes(p));
            Assert.Equal(b.Ids, a.Ids);
            Assert.Equal(b.Cells, a.Cells);
            Assert.Equal(b.Signs, a.Signs);
            Assert.Equal(b.ResidualNorms, a.ResidualNorms);
            Assert.Equal(oneByOne.Vectors(p).Data, whole.Vectors(p).Data);
            Assert.Equal(oneByOne.Attributes(p)!.Keys, whole.Attributes(p)!.Keys);
        }
        // And it answers as the one-by-one index does (exact and planned).
        var queries = TestData.Clustered(10, Dims, clusters: 6, seed: 75);
        foreach (var options in new[] { new SearchOptions { K = 10 }, new SearchOptions { K = 10, Exact = true } })
            for (int q = 0; q < 10; q++)
            {
                var want = new SearchEngine(oneByOne).Search(queries.AsSpan(q * Dims, Dims), options);
                var got = new SearchEngine(whole).Search(queries.AsSpan(q * Dims, Dims), options);
                Assert.Equal(want.Ids, got.Ids);
                Assert.Equal(want.Distances, got.Distances);
            }
    }

    [Fact]
    public async Task ADamagedAppendedSegmentIsANamedErrorWhenTheWholeVersionOpens()
    {
        var (counting, m) = await ExtendedAsync();
        var store = new IndexStore(counting, "whole");
        var segment = m.Partitions.First(p => p.Appended is { Count: > 0 }).Appended![^1].Vectors;
        var blob = store.BlobName(m, segment);
        var bytes = await store.Blobs.ReadAllAsync(blob);
        bytes[segment.Offset!.Value + segment.Bytes - 5] ^= 0x40;
        await store.Blobs.WriteAsync(blob, bytes, WriteCondition.Overwrite);
        var e = await Assert.ThrowsAsync<CorruptIndexException>(() => OpenedIndex.OpenUnpublishedAsync(store, m));
        Assert.Contains(IndexStore.PackedName(blob, segment.Offset.Value, segment.Bytes), e.Message);
    }

    [Fact]
    public void RunsOfPartitionsCoverEveryPartitionOnceInOrderWithinTheByteBound()
    {
        var rng = new Random(76);
        var sizes = Enumerable.Range(0, 40).Select(_ => (long)rng.Next(1, 400)).ToArray();
        foreach (long bound in new long[] { 1, 150, 400, 1000, long.MaxValue })
        {
            var runs = OpenedIndex.RunsOfPartitions(sizes, bound).ToList();
            Assert.Equal(Enumerable.Range(0, sizes.Length), runs.SelectMany(r => r));
            foreach (var run in runs)
                Assert.True(run.Length == 1 || run.Sum(p => sizes[p]) <= bound, $"bound {bound}: a run of {run.Length} partitions holds {run.Sum(p => sizes[p])} bytes");
            // Maximal: a run and the next partition would pass the bound.
            for (int i = 0; i + 1 < runs.Count; i++)
                Assert.True(runs[i].Sum(p => sizes[p]) + sizes[runs[i + 1][0]] > bound, $"bound {bound}: run {i} could have taken partition {runs[i + 1][0]}");
        }
    }
}
