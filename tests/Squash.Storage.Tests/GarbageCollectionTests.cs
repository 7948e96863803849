using Squash.Index.Build;

namespace Squash.Storage.Tests;

public sealed class GarbageCollectionTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-gc-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    private static float[] Data(int n, int d, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n * d).Select(_ => (float)rng.NextDouble()).ToArray();
    }

    private static async Task<List<string>> Names(IBlobStore s, string prefix)
    {
        var names = new List<string>();
        await foreach (var b in s.ListAsync(prefix)) names.Add(b.Name);
        return names;
    }

    [Fact]
    public async Task KeepsTheNewestVersionsAndCurrentAndDeletesTheRest()
    {
        var folder = new FolderBlobStore(_root);
        var store = new IndexStore(folder, "products");
        var other = new IndexStore(folder, "other");
        await IndexPublisher.BuildAndPublishAsync(other, Data(100, 4, 9), 100, 4, new IndexBuildOptions { Partitions = 2 });
        var published = new List<string>();
        for (int i = 0; i < 4; i++)
            published.Add((await IndexPublisher.BuildAndPublishAsync(store, Data(100, 4, i), 100, 4, new IndexBuildOptions { Partitions = 2 })).Version);
        // A failed build's leftovers: a newer version that current does not name.
        await folder.WriteAsync(store.VersionPrefix("v000099") + "p00000.codes.seg", new byte[] { 1 }, WriteCondition.IfNotExists);
        Assert.Equal(published.Append("v000099"), await store.ListVersionsAsync());

        var deleted = await store.CollectGarbageAsync(keep: 2);
        // The two newest are v000004 and v000099; current (v000004) is among them.
        Assert.Equal(published.Take(3), deleted);
        Assert.Equal(new[] { published[3], "v000099" }, await store.ListVersionsAsync());
        Assert.Equal(published[3], (await store.OpenCurrentAsync()).Version);
        // Other indexes in the same store are untouched.
        Assert.Single(await other.ListVersionsAsync());

        Assert.Equal(new[] { "v000099" }, await store.CollectGarbageAsync(keep: 0));
        Assert.Equal(new[] { published[3] }, await store.ListVersionsAsync());
        Assert.NotEmpty(await Names(folder, store.VersionPrefix(published[3])));
        Assert.Empty(await store.CollectGarbageAsync(keep: 0));
    }

    [Fact]
    public async Task AnEmptyStoreHasNothingToCollect()
    {
        var store = new IndexStore(new FolderBlobStore(_root));
        Assert.Empty(await store.ListVersionsAsync());
        Assert.Empty(await store.CollectGarbageAsync(3));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => store.CollectGarbageAsync(-1));
    }
}

public sealed class CachedSegmentReadTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-cached-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    [Fact]
    public async Task ConcurrentQueriesReadEachSegmentOnceAndTheCacheIsChargedItsBytes()
    {
        var rng = new Random(3);
        var data = Enumerable.Range(0, 400 * 6).Select(_ => (float)rng.NextDouble()).ToArray();
        var store = new IndexStore(new FolderBlobStore(_root), "idx");
        var m = await IndexPublisher.BuildAndPublishAsync(store, data, 400, 6, new IndexBuildOptions { Partitions = 4 });
        var counting = new IndexStore(new FaultInjectingBlobStore(store.Blobs), "idx");
        var cache = new SegmentCache(new SegmentCacheOptions { CapacityBytes = 1 << 30 });
        long before = counting.BytesRead;
        await Task.WhenAll(Enumerable.Range(0, 32).Select(i => Task.Run(async () =>
        {
            var p = m.Partitions[i % 4];
            var codes = await counting.ReadCodesAsync(m, p, cache);
            var vectors = await counting.ReadVectorsAsync(m, p, cache);
            Assert.Equal(p.Count, codes.Count);
            await counting.ReadRoutingAsync(m, cache);
        })));
        long expected = m.Partitions.Sum(p => p.Codes.Bytes + p.Vectors.Bytes) + m.Routing.Bytes;
        Assert.Equal(expected, counting.BytesRead - before);
        Assert.Equal(9, cache.Stats.Misses);
        Assert.Equal(expected, cache.Stats.CurrentBytes);
        Assert.Equal(96, cache.Stats.Requests);
    }
}
