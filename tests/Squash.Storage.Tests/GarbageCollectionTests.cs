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
