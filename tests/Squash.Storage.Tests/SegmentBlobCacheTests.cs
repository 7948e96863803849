using Squash.Testing;

namespace Squash.Storage.Tests;

/// <summary>The ingest's cache of immutable segment blobs: what it keeps, what it answers, what it forgets.</summary>
public sealed class SegmentBlobCacheTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-segcache-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    private const string Codes = "idx/versions/v1/p00001.codes.seg", Vectors = "idx/versions/v1/p00001.vectors.seg", Current = "idx/current";

    [Fact]
    public async Task SegmentsReadOrWrittenOnceAreAnsweredFromMemoryAndOthersAlwaysFromTheStore()
    {
        var counting = new RequestCountingStore(new FolderBlobStore(_root));
        var cache = new SegmentBlobCache(1 << 20);
        var store = cache.Over(counting);
        await store.WriteAsync(Codes, new byte[] { 1, 2, 3 }, WriteCondition.IfNotExists);
        await store.WriteAsync(Vectors, new byte[] { 4 }, WriteCondition.IfNotExists);
        await store.WriteAsync(Current, new byte[] { 5 }, WriteCondition.Overwrite);

        Assert.Equal([1, 2, 3], await store.ReadAllAsync(Codes));
        Assert.Equal(0, counting.Reads); // written through the cache: never read back
        Assert.Equal([4], await store.ReadAllAsync(Vectors));
        Assert.Equal([4], await store.ReadAllAsync(Vectors));
        Assert.Equal([5], await store.ReadAllAsync(Current));
        Assert.Equal(3, counting.Reads); // raw vectors and the pointer are not kept

        // Another process's segment: read from the store once.
        await new FolderBlobStore(_root).WriteAsync("idx/versions/v2/p00001.deleted.seg", new byte[] { 6 }, WriteCondition.IfNotExists);
        Assert.Equal([6], await store.ReadAllAsync("idx/versions/v2/p00001.deleted.seg"));
        Assert.Equal([6], await store.ReadAllAsync("idx/versions/v2/p00001.deleted.seg"));
        Assert.Equal(4, counting.Reads);
        Assert.Equal(2, cache.Hits);
    }

    [Fact]
    public async Task RangesOfAnIndexPackComeFromTheWrittenPackOrFromTheRangeReadBeforeAndOnlyWrittenVectorPacksAreKept()
    {
        var counting = new RequestCountingStore(new FolderBlobStore(_root));
        var cache = new SegmentBlobCache(1 << 20);
        var store = cache.Over(counting);
        const string Own = "idx/versions/v1/index.pack", Others = "idx/versions/v2/index.pack", Raw = "idx/versions/v1/vectors.pack",
            OthersRaw = "idx/versions/v2/vectors.pack";
        var bytes = Enumerable.Range(0, 256).Select(i => (byte)i).ToArray();
        await store.WriteAsync(Own, bytes, WriteCondition.IfNotExists);
        await store.WriteAsync(Raw, bytes, WriteCondition.IfNotExists);
        await new FolderBlobStore(_root).WriteAsync(Others, bytes, WriteCondition.IfNotExists);

        Assert.Equal(bytes[10..30], await store.ReadRangeAsync(Own, 10, 20));
        Assert.Equal(bytes[200..256], await store.ReadRangeAsync(Own, 200, 56));
        Assert.Equal(0, counting.RangedReads); // sliced from the pack this process wrote
        Assert.Equal(bytes[64..128], await store.ReadRangeAsync(Others, 64, 64));
        Assert.Equal(bytes[64..128], await store.ReadRangeAsync(Others, 64, 64));
        Assert.Equal(bytes[64..96], await store.ReadRangeAsync(Others, 64, 32)); // another range: read
        Assert.Equal(2, counting.RangedReads);
        Assert.Equal(bytes[0..8], await store.ReadRangeAsync(Raw, 0, 8));
        Assert.Equal(bytes, await store.ReadAllAsync(Raw));
        Assert.Equal(2, counting.RangedReads); // the vector pack this process wrote: sliced from its bytes
        Assert.Equal(0, counting.Reads);
        await new FolderBlobStore(_root).WriteAsync(OthersRaw, bytes, WriteCondition.IfNotExists);
        Assert.Equal(bytes[0..8], await store.ReadRangeAsync(OthersRaw, 0, 8));
        Assert.Equal(bytes[0..8], await store.ReadRangeAsync(OthersRaw, 0, 8));
        Assert.Equal(bytes, await store.ReadAllAsync(OthersRaw));
        Assert.Equal(bytes, await store.ReadAllAsync(OthersRaw));
        Assert.Equal(4, counting.RangedReads); // another's vector pack is not kept, whole or in ranges
        Assert.Equal(2, counting.Reads);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => store.ReadRangeAsync(Own, 250, 10)); // past the end: the store's error

        // Deleted: neither the pack nor ranges read from one are served again.
        Assert.True(await store.DeleteAsync(Others));
        await Assert.ThrowsAsync<BlobNotFoundException>(() => store.ReadRangeAsync(Others, 64, 64));
        Assert.True(await store.DeleteAsync(Own));
        await Assert.ThrowsAsync<BlobNotFoundException>(() => store.ReadRangeAsync(Own, 10, 20));
        Assert.True(await store.DeleteAsync(Raw));
        await Assert.ThrowsAsync<BlobNotFoundException>(() => store.ReadRangeAsync(Raw, 0, 8));
        Assert.Equal(0, cache.Bytes);
    }

    [Fact]
    public async Task ARangeSpanningManySegmentsIsNotKeptButAHeldPackStillAnswersIt()
    {
        var counting = new RequestCountingStore(new FolderBlobStore(_root));
        var cache = new SegmentBlobCache(64L << 20);
        var store = cache.Over(counting);
        const string Others = "idx/versions/v2/index.pack", Own = "idx/versions/v1/index.pack";
        int large = SegmentBlobCache.MaxKeptRangeBytes + 1;
        var bytes = Enumerable.Range(0, large + 100).Select(i => (byte)(i * 7)).ToArray();
        await new FolderBlobStore(_root).WriteAsync(Others, bytes, WriteCondition.IfNotExists);

        // A bulk read (IndexStore.PrefetchedAsync's) goes to the store each time and leaves the budget alone.
        Assert.Equal(bytes[50..(50 + large)], await store.ReadRangeAsync(Others, 50, large));
        Assert.Equal(bytes[50..(50 + large)], await store.ReadRangeAsync(Others, 50, large));
        Assert.Equal(2, counting.RangedReads);
        Assert.Equal(0, cache.Bytes);
        // A segment-sized range is still kept.
        int kept = SegmentBlobCache.MaxKeptRangeBytes;
        Assert.Equal(bytes[0..kept], await store.ReadRangeAsync(Others, 0, kept));
        Assert.Equal(bytes[0..kept], await store.ReadRangeAsync(Others, 0, kept));
        Assert.Equal(3, counting.RangedReads);
        Assert.Equal(kept, cache.Bytes);
        // A pack held whole answers a large range from memory.
        await store.WriteAsync(Own, bytes, WriteCondition.IfNotExists);
        Assert.Equal(bytes[10..(10 + large)], await store.ReadRangeAsync(Own, 10, large));
        Assert.Equal(3, counting.RangedReads);
    }

    [Fact]
    public async Task ADeletedSegmentIsForgottenAndTheBudgetHolds()
    {
        var counting = new RequestCountingStore(new FolderBlobStore(_root));
        var cache = new SegmentBlobCache(4096);
        var store = cache.Over(counting);
        await store.WriteAsync(Codes, new byte[100], WriteCondition.IfNotExists);
        Assert.True(await store.DeleteAsync(Codes));
        Assert.Equal(0, cache.Bytes);
        await Assert.ThrowsAsync<BlobNotFoundException>(() => store.ReadAllAsync(Codes));

        for (int p = 0; p < 100; p++) await store.WriteAsync($"idx/versions/v1/p{p:D5}.attributes.seg", new byte[500], WriteCondition.IfNotExists);
        Assert.InRange(cache.Bytes, 1, 4096);
        // The newest is held, the oldest went out.
        int before = counting.Reads;
        await store.ReadAllAsync("idx/versions/v1/p00099.attributes.seg");
        Assert.Equal(before, counting.Reads);
        await store.ReadAllAsync("idx/versions/v1/p00000.attributes.seg");
        Assert.Equal(before + 1, counting.Reads);
    }
}
