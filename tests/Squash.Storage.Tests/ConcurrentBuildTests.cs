using Squash.Index.Build;
using Squash.Index.Model;

namespace Squash.Storage.Tests;

/// <summary>
/// Invariant 8: concurrent builds and garbage collection never damage a published version. Several
/// builders (each with its own store instance, as separate processes would have) build one index at once,
/// with gc and a reader running alongside; afterwards current is the newest build and every version that
/// has a manifest is complete.
/// </summary>
public sealed class ConcurrentBuildTests : IAsyncLifetime
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-concurrent-" + Guid.NewGuid().ToString("N"));
    private readonly string _container = "concurrent-" + Guid.NewGuid().ToString("N")[..16];
    private bool _usedAzure;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        if (_usedAzure) await new AzureBlobStore(Azurite.ConnectionString, _container).Container.DeleteIfExistsAsync();
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    /// <summary>A fresh store instance over the same storage, as another process would open it.</summary>
    private IndexStore Open(string kind)
    {
        if (kind == "azure")
        {
            _usedAzure = true;
            return new IndexStore(new ResilientBlobStore(new AzureBlobStore(Azurite.ConnectionString, _container)), "products");
        }
        return new IndexStore(new FolderBlobStore(_root), "products");
    }

    private static float[] Data(int n, int d, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n * d).Select(_ => (float)rng.NextDouble()).ToArray();
    }

    /// <summary>Build i has 200 + 10·i vectors, so a manifest's count says which build it came from.</summary>
    private static Task<IndexManifest> Build(IndexStore store, int i) =>
        IndexPublisher.BuildAndPublishAsync(store, Data(200 + 10 * i, 6, 100 + i), 200 + 10 * i, 6, new IndexBuildOptions { Partitions = 2, Seed = i });

    [Theory]
    [InlineData("folder")]
    [InlineData("azure")]
    public async Task ConcurrentBuildsAllSucceedAndCurrentIsTheNewest(string kind)
    {
        const int builders = 6;
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var manifests = await Task.WhenAll(Enumerable.Range(0, builders).Select(i => Task.Run(() => Build(Open(kind), i), deadline.Token)));

        var store = Open(kind);
        Assert.Equal(builders, manifests.Select(m => m.Version).Distinct().Count());
        var newest = manifests.MaxBy(m => m.Version, VersionIds.Order)!;
        Assert.Equal(newest.Version, (await store.GetCurrentAsync())!.Value.Version);
        await AssertCurrentAnswersAsync(store);
        var complete = await AssertEveryVersionWithAManifestIsCompleteAsync(store);
        Assert.Equal(manifests.Select(m => m.Version).Order(VersionIds.Order), complete);
    }

    [Theory]
    [InlineData("folder")]
    [InlineData("azure")]
    public async Task GcAndAReaderRacingBuildsNeverDamageAPublishedVersion(string kind)
    {
        var setup = Open(kind);
        await Build(setup, 0);
        var leftovers = kind == "folder" ? await PlantOldLeftoversAsync((FolderBlobStore)setup.Blobs, setup) : [];

        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        // The builds start once gc and the reader have each finished a round, so that both race them even when a
        // loaded machine schedules the racers late.
        var gcStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var readerStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var all = Task.Run(async () =>
        {
            await Task.WhenAll(gcStarted.Task, readerStarted.Task).WaitAsync(deadline.Token);
            return await Task.WhenAll(Enumerable.Range(0, 2).Select(w => Task.Run(async () =>
            {
                var store = Open(kind);
                var built = new List<IndexManifest>();
                for (int j = 0; j < 3; j++) built.Add(await Build(store, 1 + w * 3 + j));
                return built;
            }, deadline.Token)));
        }, deadline.Token);
        int gcRuns = 0, reads = 0;
        var gc = Task.Run(async () =>
        {
            var store = Open(kind);
            // The CLI's default grace; keep 0 asks for everything gc may take.
            do
            {
                await store.CollectGarbageAsync(keep: 0, grace: TimeSpan.FromHours(1), ct: deadline.Token);
                gcRuns++;
                gcStarted.TrySetResult();
            } while (!all.IsCompleted);
        }, deadline.Token);
        var reader = Task.Run(async () =>
        {
            var store = Open(kind);
            do
            {
                // A query's view: resolve current, then read every segment of that version.
                await AssertCurrentAnswersAsync(store);
                reads++;
                readerStarted.TrySetResult();
            } while (!all.IsCompleted);
        }, deadline.Token);
        await Task.WhenAll(all, gc, reader);

        Assert.True(gcRuns > 1 && reads > 1, $"gc ran {gcRuns} times and the reader {reads} times while the builds ran");
        var store = Open(kind);
        var newest = (await all).SelectMany(b => b).MaxBy(m => m.Version, VersionIds.Order)!;
        Assert.Equal(newest.Version, (await store.GetCurrentAsync())!.Value.Version);
        await AssertCurrentAnswersAsync(store);
        await AssertEveryVersionWithAManifestIsCompleteAsync(store);
        var versions = await store.ListVersionsAsync();
        Assert.All(leftovers, v => Assert.DoesNotContain(v, versions));
    }

    /// <summary>
    /// What earlier failed builds left in a folder store hours ago (an old counter id and a new-form id),
    /// so that the racing gc has something it must delete.
    /// </summary>
    private static async Task<string[]> PlantOldLeftoversAsync(FolderBlobStore folder, IndexStore store)
    {
        var old = DateTimeOffset.UtcNow.AddHours(-3);
        string[] versions = ["v000007", VersionIds.New(old)];
        foreach (var v in versions)
        {
            var name = store.VersionPrefix(v) + "p00000.codes.seg";
            await folder.WriteAsync(name, new byte[] { 1, 2, 3 }, WriteCondition.IfNotExists);
            File.SetLastWriteTimeUtc(Path.Combine(folder.Root, name), old.UtcDateTime);
        }
        return versions;
    }

    /// <summary>Resolves current and reads and decodes every segment of it.</summary>
    internal static async Task AssertCurrentAnswersAsync(IndexStore store)
    {
        var m = await store.OpenCurrentAsync();
        var routing = await store.ReadRoutingAsync(m);
        Assert.NotNull(routing);
        long rows = 0;
        foreach (var p in m.Partitions)
        {
            Assert.Equal(p.Count, (await store.ReadCodesAsync(m, p)).Count);
            Assert.Equal(p.Count, (await store.ReadVectorsAsync(m, p)).Count);
            rows += p.Count;
        }
        Assert.Equal(m.Count, rows);
    }

    /// <summary>Every blob named by every manifest in the store exists with its recorded size; returns those versions, oldest first.</summary>
    internal static async Task<List<string>> AssertEveryVersionWithAManifestIsCompleteAsync(IndexStore store)
    {
        var sizes = new Dictionary<string, long>(StringComparer.Ordinal);
        await foreach (var b in store.Blobs.ListAsync(store.Name + "/versions/")) sizes[b.Name] = b.Length;
        var withManifest = new List<string>();
        foreach (var v in await store.ListVersionsAsync())
        {
            if (!sizes.ContainsKey(store.VersionPrefix(v) + "manifest.json")) continue;
            var m = await store.ReadManifestAsync(v);
            var named = new List<SegmentRef> { m.Routing };
            foreach (var p in m.Partitions) named.AddRange(p.Attributes is null ? [p.Codes, p.Vectors] : [p.Codes, p.Vectors, p.Attributes]);
            foreach (var s in named)
            {
                var name = store.VersionPrefix(v) + s.Name;
                Assert.True(sizes.TryGetValue(name, out long size), $"version {v} is published but '{name}' is missing");
                Assert.Equal(s.Bytes, size);
            }
            withManifest.Add(v);
        }
        return withManifest;
    }
}
