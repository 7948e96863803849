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

    [Fact]
    public async Task AConcurrentPublisherThatLostTheRaceCannotMoveThePointer()
    {
        var store = new IndexStore(new FolderBlobStore(_root));
        await IndexPublisher.BuildAndPublishAsync(store, Data(200, 4, 1), 200, 4, new IndexBuildOptions { Partitions = 2 });
        var seen = await store.GetCurrentAsync();
        await IndexPublisher.BuildAndPublishAsync(store, Data(300, 4, 2), 300, 4, new IndexBuildOptions { Partitions = 2 });
        // A third build that read the pointer before the second one published.
        var version = await store.NewVersionIdAsync();
        var manifest = await IndexBuilder.BuildAsync(Data(250, 4, 3), 250, 4, new IndexBuildOptions { Partitions = 2 }, version, store.CreateSink(version));
        await Assert.ThrowsAsync<BlobConditionFailedException>(() => store.PublishAsync(manifest, seen));
        Assert.Equal(300, (await store.OpenCurrentAsync()).Count);
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
