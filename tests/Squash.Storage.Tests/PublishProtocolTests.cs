using Squash.Index.Build;
using Squash.Index.Format;

namespace Squash.Storage.Tests;

/// <summary>Invariant 5: a reader never sees a half-written index.</summary>
public sealed class PublishProtocolTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-publish-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    /// <summary>A store that fails every write after the first <c>allowed</c> ones (a build killed mid-way).</summary>
    private sealed class FailingStore(IBlobStore inner, int allowed) : IBlobStore
    {
        private int _writes;
        public string Description => inner.Description;
        public Task<byte[]> ReadAllAsync(string name, CancellationToken ct = default) => inner.ReadAllAsync(name, ct);
        public Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken ct = default) => inner.ReadRangeAsync(name, offset, length, ct);
        public Task<BlobInfo?> GetInfoAsync(string name, CancellationToken ct = default) => inner.GetInfoAsync(name, ct);
        public IAsyncEnumerable<BlobInfo> ListAsync(string prefix, CancellationToken ct = default) => inner.ListAsync(prefix, ct);
        public Task<bool> DeleteAsync(string name, CancellationToken ct = default) => inner.DeleteAsync(name, ct);
        public Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken ct = default) =>
            Interlocked.Increment(ref _writes) > allowed ? throw new IOException($"injected failure writing {name}") : inner.WriteAsync(name, data, condition, ct);
    }

    private static float[] Data(int n, int d, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n * d).Select(_ => (float)rng.NextDouble()).ToArray();
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(7)]
    [InlineData(9)]
    [InlineData(10)]
    public async Task AnInterruptedBuildLeavesThePreviousVersionServing(int failAfter)
    {
        var folder = new FolderBlobStore(_root);
        var store = new IndexStore(folder);
        var first = await IndexPublisher.BuildAndPublishAsync(store, Data(400, 6, 1), 400, 6, new IndexBuildOptions { Partitions = 4 });

        var broken = new IndexStore(new FailingStore(folder, failAfter));
        // 4 partitions × 2 segments + routing + manifest + pointer = 11 writes; any failure before the pointer must not publish.
        await Assert.ThrowsAsync<IOException>(() => IndexPublisher.BuildAndPublishAsync(broken, Data(500, 6, 2), 500, 6, new IndexBuildOptions { Partitions = 4 }));

        var current = await store.OpenCurrentAsync();
        Assert.Equal(first.Version, current.Version);
        Assert.Equal(400, current.Count);
        // The failed version's blobs were removed.
        var names = new List<string>();
        await foreach (var b in folder.ListAsync("versions/")) names.Add(b.Name);
        Assert.All(names, n => Assert.StartsWith($"versions/{first.Version}/", n));

        var next = await IndexPublisher.BuildAndPublishAsync(store, Data(500, 6, 2), 500, 6, new IndexBuildOptions { Partitions = 4 });
        Assert.Equal(500, (await store.OpenCurrentAsync()).Count);
        Assert.NotEqual(first.Version, next.Version);
    }

    /// <summary>
    /// A write of the current version's dimension that reaches the log while a build of another dimension runs: the build
    /// checks the log again just before it publishes, so it fails naming the conflict, the current version stays, and the
    /// build's blobs are removed.
    /// </summary>
    [Fact]
    public async Task AWriteOfAnotherDimensionDuringTheBuildStopsItsPublish()
    {
        var folder = new FolderBlobStore(_root);
        var store = new IndexStore(folder, "shop");
        var first = await IndexPublisher.BuildAndPublishAsync(store, Data(400, 6, 1), 400, 6, new IndexBuildOptions { Partitions = 4 });
        var log = new Squash.Storage.Writes.WriteLog(folder, "shop");
        var e = await Assert.ThrowsAsync<Squash.Storage.Writes.WriteLogConflictException>(() => IndexPublisher.BuildAndPublishAsync(store, Data(300, 8, 2), 300, 8,
            new IndexBuildOptions { Partitions = 4 }, beforePublish: async (manifest, ct) =>
            {
                await log.AppendAsync(new Squash.Storage.Writes.WriteBatch { CreatedUtc = DateTimeOffset.UtcNow, Upserts = [new("3", new float[6])] }, null, "r", 0, ct);
                return manifest;
            }));
        Assert.StartsWith($"index 'shop' has writes in its write-ahead log (through sequence 1) made against version {first.Version}, which has 6 dimensions where this build has 8: ", e.Message);
        Assert.Equal(first.Version, (await store.GetCurrentAsync())!.Value.Version);
        var names = new List<string>();
        await foreach (var b in folder.ListAsync("shop/versions/")) names.Add(b.Name);
        Assert.All(names, n => Assert.StartsWith($"shop/versions/{first.Version}/", n));
    }

    [Fact]
    public async Task AnOlderBuildThatFinishesLastLeavesTheNewerOneCurrent()
    {
        var store = new IndexStore(new FolderBlobStore(_root));
        await IndexPublisher.BuildAndPublishAsync(store, Data(200, 4, 1), 200, 4, new IndexBuildOptions { Partitions = 2 });
        // Two builds overlap: the one that started first (older id) finishes last.
        var older = store.CreateSink(VersionIds.New(DateTimeOffset.UtcNow.AddSeconds(-1)));
        var newer = store.CreateSink(IndexStore.NewVersionId());
        var olderManifest = await IndexBuilder.BuildAsync(Data(250, 4, 3), 250, 4, new IndexBuildOptions { Partitions = 2 }, older.Version, older);
        var newerManifest = await IndexBuilder.BuildAsync(Data(300, 4, 2), 300, 4, new IndexBuildOptions { Partitions = 2 }, newer.Version, newer);
        Assert.Equal(new IndexStore.PublishResult(true, newer.Version), await store.PublishAsync(newer, newerManifest));
        Assert.Equal(new IndexStore.PublishResult(false, newer.Version), await store.PublishAsync(older, olderManifest));
        Assert.Equal(300, (await store.OpenCurrentAsync()).Count);
        // The older version is complete, just not current.
        await store.VerifyCompleteAsync(await store.ReadManifestAsync(older.Version));
    }

    /// <summary>
    /// Wraps a store: the first write into a version folder is preceded by another writer's blob in the
    /// same folder (what two builds sharing a version id did), and writes fail after <c>allowed</c>.
    /// </summary>
    private sealed class SharedFolderStore(IBlobStore inner, int allowed) : IBlobStore
    {
        private int _writes;
        private readonly SemaphoreSlim _foreignGate = new(1, 1);
        public string? Foreign { get; private set; }
        public string Description => inner.Description;
        public Task<byte[]> ReadAllAsync(string name, CancellationToken ct = default) => inner.ReadAllAsync(name, ct);
        public Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken ct = default) => inner.ReadRangeAsync(name, offset, length, ct);
        public Task<BlobInfo?> GetInfoAsync(string name, CancellationToken ct = default) => inner.GetInfoAsync(name, ct);
        public IAsyncEnumerable<BlobInfo> ListAsync(string prefix, CancellationToken ct = default) => inner.ListAsync(prefix, ct);
        public Task<bool> DeleteAsync(string name, CancellationToken ct = default) => inner.DeleteAsync(name, ct);
        public async Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken ct = default)
        {
            if (name.StartsWith("versions/", StringComparison.Ordinal))
            {
                // The build writes partitions in parallel: only the first writer plants the foreign blob.
                await _foreignGate.WaitAsync(ct);
                try
                {
                    if (Foreign is null)
                    {
                        var foreign = name[..(name.LastIndexOf('/') + 1)] + "written-by-another-build.seg";
                        await inner.WriteAsync(foreign, new byte[] { 42 }, WriteCondition.IfNotExists, ct);
                        Foreign = foreign;
                    }
                }
                finally { _foreignGate.Release(); }
            }
            if (Interlocked.Increment(ref _writes) > allowed) throw new IOException($"injected failure writing {name}");
            return await inner.WriteAsync(name, data, condition, ct);
        }
    }

    [Fact]
    public async Task AFailedBuildDeletesOnlyTheBlobsItWrote()
    {
        var folder = new FolderBlobStore(_root);
        var shared = new SharedFolderStore(folder, allowed: 5);
        await Assert.ThrowsAsync<IOException>(() => IndexPublisher.BuildAndPublishAsync(new IndexStore(shared), Data(400, 6, 2), 400, 6, new IndexBuildOptions { Partitions = 4 }));
        var left = new List<string>();
        await foreach (var b in folder.ListAsync("versions/")) left.Add(b.Name);
        Assert.Equal(new[] { shared.Foreign }, left);
    }

    [Fact]
    public async Task AFlippedByteInASegmentIsAClearErrorNamingTheBlob()
    {
        var folder = new FolderBlobStore(_root);
        var store = new IndexStore(folder);
        var m = await IndexPublisher.BuildAndPublishAsync(store, Data(200, 4, 1), 200, 4, new IndexBuildOptions { Partitions = 2 });
        var path = Path.Combine(_root, "versions", m.Version, m.Partitions[1].Codes.Name);
        var bytes = File.ReadAllBytes(path);
        bytes[bytes.Length / 2] ^= 0xFF;
        File.WriteAllBytes(path, bytes);
        var e = await Assert.ThrowsAsync<CorruptIndexException>(() => store.ReadCodesAsync(m, m.Partitions[1]));
        Assert.Contains(m.Partitions[1].Codes.Name, e.Message);
        Assert.Contains("checksum", e.Message);
    }

    [Fact]
    public async Task OpeningAnEmptyStoreSaysNothingIsPublished()
    {
        var store = new IndexStore(new FolderBlobStore(_root));
        var e = await Assert.ThrowsAsync<IndexNotFoundException>(() => store.OpenCurrentAsync());
        Assert.Contains("no index is published", e.Message);
    }
}
