using Squash.Index.Format;
using Squash.Index.Build;
using Squash.Index.Model;
using Squash.Testing;

namespace Squash.Storage.Tests;

/// <summary>
/// Many vector segments of one pack read together (what an ingest run's compaction reads): one request for neighbouring
/// ranges, the same rows as reading each segment alone, and a pack shorter than the manifest says or a damaged segment
/// is a named <see cref="CorruptIndexException"/>.
/// </summary>
public sealed class VectorSegmentsReadTests : IDisposable
{
    private const int N = 1200, Dims = 16;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-vector-segments-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    private sealed class CountingStore(IBlobStore inner) : IBlobStore
    {
        public int RangedReads;
        public string Description => inner.Description;
        public Task<byte[]> ReadAllAsync(string name, CancellationToken ct = default) => inner.ReadAllAsync(name, ct);
        public Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken ct = default)
        {
            if (name.EndsWith(SegmentPack.VectorsName, StringComparison.Ordinal)) Interlocked.Increment(ref RangedReads);
            return inner.ReadRangeAsync(name, offset, length, ct);
        }
        public Task<BlobInfo?> GetInfoAsync(string name, CancellationToken ct = default) => inner.GetInfoAsync(name, ct);
        public IAsyncEnumerable<BlobInfo> ListAsync(string prefix, CancellationToken ct = default) => inner.ListAsync(prefix, ct);
        public Task<bool> DeleteAsync(string name, CancellationToken ct = default) => inner.DeleteAsync(name, ct);
        public Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken ct = default) => inner.WriteAsync(name, data, condition, ct);
    }

    private async Task<(IndexStore Store, CountingStore Counting, IndexManifest Packed)> PackedAsync()
    {
        var rng = new Random(3);
        var data = Enumerable.Range(0, N * Dims).Select(_ => (float)rng.NextDouble()).ToArray();
        var counting = new CountingStore(new FolderBlobStore(_root));
        var store = new IndexStore(counting, "segments");
        await IndexPublisher.BuildAndPublishAsync(store, data, N, Dims, new IndexBuildOptions { Partitions = 12, Seed = 5 });
        return (store, counting, await PackedVersion.RepackCurrentAsync(store));
    }

    [Fact]
    public async Task NeighbouringSegmentsOfAPackAreReadByOneRequestAsEachAlone()
    {
        var (store, counting, m) = await PackedAsync();
        counting.RangedReads = 0;
        // Every other partition, in no particular order: the gaps between them are small, so still one request.
        var wanted = m.Partitions.Where(p => p.Id % 2 == 1).Reverse().ToArray();
        var together = await store.ReadVectorSegmentsAsync(m, wanted);
        Assert.Equal(1, counting.RangedReads);
        for (int i = 0; i < wanted.Length; i++)
        {
            var alone = await store.ReadVectorsAsync(m, wanted[i]);
            Assert.Equal(alone.Count, together[i].Count);
            Assert.Equal(alone.Data, together[i].Data);
        }
        Assert.Empty(await store.ReadVectorSegmentsAsync(m, []));
    }

    [Fact]
    public async Task AShortOrDamagedPackIsANamedCorruptIndexException()
    {
        var (store, _, m) = await PackedAsync();
        var pack = store.BlobName(m, m.Partitions[0].Vectors);
        var bytes = await store.Blobs.ReadAllAsync(pack);

        var last = m.Partitions.MaxBy(p => p.Vectors.Offset)!;
        await store.Blobs.WriteAsync(pack, bytes.AsMemory(0, (int)(last.Vectors.Offset!.Value + last.Vectors.Bytes / 2)), WriteCondition.Overwrite);
        var shortPack = await Assert.ThrowsAsync<CorruptIndexException>(() => store.ReadVectorSegmentsAsync(m, m.Partitions.ToArray()));
        Assert.Contains(pack, shortPack.Message);

        var damaged = (byte[])bytes.Clone();
        var first = m.Partitions[0].Vectors;
        damaged[first.Offset!.Value + first.Bytes - 5] ^= 0x40;
        await store.Blobs.WriteAsync(pack, damaged, WriteCondition.Overwrite);
        var flipped = await Assert.ThrowsAsync<CorruptIndexException>(() => store.ReadVectorSegmentsAsync(m, m.Partitions.ToArray()));
        Assert.Contains(IndexStore.PackedName(pack, first.Offset.Value, first.Bytes), flipped.Message);
    }
}
