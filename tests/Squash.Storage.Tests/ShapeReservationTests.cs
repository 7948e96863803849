using Squash.Index.Build;
using Squash.Storage.Writes;

namespace Squash.Storage.Tests;

/// <summary>
/// The pointer reservation that closes the window between a build's last check of the write log and its publish
/// (WriteLogConflict.PublishGuard, CheckAfterAppendAsync), on a folder and on Azurite (whose ETags the compare-and-swaps
/// rely on): a write of the old shape made while the build holds the reservation clears it and stands, and the build is
/// refused; a write whose batch lands after the build published is told it does not fit.
/// </summary>
public sealed class ShapeReservationTests : IAsyncLifetime
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-shape-" + Guid.NewGuid().ToString("N"));
    private readonly string _container = "shape-" + Guid.NewGuid().ToString("N")[..16];
    private bool _usedAzure;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        if (_usedAzure) await new AzureBlobStore(Azurite.ConnectionString, _container).Container.DeleteIfExistsAsync();
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    private IBlobStore Store(string kind)
    {
        if (kind != "azure") return new FolderBlobStore(_root);
        _usedAzure = true;
        return new ResilientBlobStore(new AzureBlobStore(Azurite.ConnectionString, _container));
    }

    /// <summary>Runs <see cref="Hook"/> once, before the <see cref="Nth"/> write of the index's pointer.</summary>
    private sealed class PointerHook(IBlobStore inner) : IBlobStore
    {
        private int _pointerWrites;
        public int Nth { get; init; }
        public Func<Task>? Hook { get; init; }
        public string Description => inner.Description;
        public Task<byte[]> ReadAllAsync(string name, CancellationToken ct = default) => inner.ReadAllAsync(name, ct);
        public Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken ct = default) => inner.ReadRangeAsync(name, offset, length, ct);
        public Task<BlobInfo?> GetInfoAsync(string name, CancellationToken ct = default) => inner.GetInfoAsync(name, ct);
        public IAsyncEnumerable<BlobInfo> ListAsync(string prefix, CancellationToken ct = default) => inner.ListAsync(prefix, ct);
        public Task<bool> DeleteAsync(string name, CancellationToken ct = default) => inner.DeleteAsync(name, ct);
        public async Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken ct = default)
        {
            if (name == "shop/current" && Interlocked.Increment(ref _pointerWrites) == Nth && Hook is not null) await Hook();
            return await inner.WriteAsync(name, data, condition, ct);
        }
    }

    private static float[] Data(int n, int d, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n * d).Select(_ => (float)rng.NextDouble()).ToArray();
    }

    private static WriteBatch SixDims(string id) => new() { CreatedUtc = DateTimeOffset.UtcNow, Upserts = [new UpsertItem(id, new float[] { 1, 2, 3, 4, 5, 6 })] };

    [Theory]
    [InlineData("folder")]
    [InlineData("azure")]
    public async Task AWriteUnderTheReservationClearsItAndStandsAndTheBuildIsRefused(string kind)
    {
        var blobs = Store(kind);
        var store = new IndexStore(blobs, "shop");
        var first = await IndexPublisher.BuildAndPublishAsync(store, Data(300, 6, 1), 300, 6, new IndexBuildOptions { Partitions = 2 });
        var log = new WriteLog(blobs, "shop");

        // Before the build's second pointer write (its move, after the reservation and the check): a write of 6 dimensions.
        IndexStore.PointerState? reserved = null;
        WriteLogConflict.AfterAppend? verdict = null;
        var hooked = new PointerHook(blobs)
        {
            Nth = 2,
            Hook = async () =>
            {
                reserved = await store.ReadPointerAsync();
                var batch = SixDims("300");
                await log.AppendAsync(batch, null, "", 0);
                verdict = await WriteLogConflict.CheckAfterAppendAsync(store, first, batch);
            },
        };
        var e = await Assert.ThrowsAsync<WriteLogConflictException>(() => IndexPublisher.BuildAndPublishAsync(new IndexStore(hooked, "shop"), Data(200, 8, 2), 200, 8,
            new IndexBuildOptions { Partitions = 2 }).WaitAsync(TimeSpan.FromMinutes(2)));
        Assert.StartsWith($"index 'shop' has writes in its write-ahead log (through sequence 1) made against version {first.Version}, which has 6 dimensions where this build has 8", e.Message);
        Assert.Equal(first.Version, reserved!.Version);
        Assert.Equal((8, false), (reserved.Reserved!.Dimensions, reserved.Reserved.HasIds));
        Assert.Equal((first.Version, 0), (verdict!.Current, verdict.Misfits.Count));
        var pointer = await store.ReadPointerAsync();
        Assert.Equal(first.Version, pointer!.Version);
        Assert.Null(pointer.Reserved);
    }

    [Theory]
    [InlineData("folder")]
    [InlineData("azure")]
    public async Task AWriteWhoseBatchLandsAfterThePublishIsToldWhatNoLongerFits(string kind)
    {
        var blobs = Store(kind);
        var store = new IndexStore(blobs, "shop");
        var first = await IndexPublisher.BuildAndPublishAsync(store, Data(300, 6, 1), 300, 6, new IndexBuildOptions { Partitions = 2 });
        var next = await IndexPublisher.BuildAndPublishAsync(store, Data(200, 8, 2), 200, 8, new IndexBuildOptions { Partitions = 2 });
        // Validated against the first version before the second was published; its batch lands after.
        var batch = SixDims("sku-1");
        await new WriteLog(blobs, "shop").AppendAsync(batch, null, "", 0);
        var verdict = await WriteLogConflict.CheckAfterAppendAsync(store, first, batch);
        Assert.Equal(next.Version, verdict.Current);
        Assert.Equal([("upserts[0].vector", "has 6 dimensions; the index now has 8"),
            ("upserts[0].id", "'sku-1' is not a row number; the index now names its rows by number (it was built without ids)")], verdict.Misfits);
        // A write of the new shape stands; a build of the same shape reserves nothing.
        Assert.Empty((await WriteLogConflict.CheckAfterAppendAsync(store, first, new WriteBatch { Upserts = [new UpsertItem("7", new float[8])] })).Misfits);
        Assert.Null((await store.ReadPointerAsync())!.Reserved);
    }
}
