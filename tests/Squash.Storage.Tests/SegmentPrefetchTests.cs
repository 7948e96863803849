using Squash.Index.Format;
using Squash.Index.Build;
using Squash.Index.Model;
using Squash.Testing;

namespace Squash.Storage.Tests;

/// <summary>
/// Many segments of one pack fetched together (<see cref="IndexStore.PrefetchedAsync"/>, what an ingest run's compaction
/// and a whole-version open read): one request for neighbouring ranges, the same rows as reading each segment alone, and a
/// pack shorter than the manifest says or a damaged segment is a named <see cref="CorruptIndexException"/>.
/// </summary>
public sealed class SegmentPrefetchTests : IDisposable
{
    private const int N = 1200, Dims = 16;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-vector-segments-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    private async Task<(IndexStore Store, RequestCountingStore Counting, IndexManifest Packed)> PackedAsync()
    {
        var rng = new Random(3);
        var data = Enumerable.Range(0, N * Dims).Select(_ => (float)rng.NextDouble()).ToArray();
        var counting = new RequestCountingStore(new FolderBlobStore(_root), name => name.EndsWith(SegmentPack.VectorsName, StringComparison.Ordinal));
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
        var ahead = await store.PrefetchedAsync(m, wanted.Select(e => e.Vectors));
        Assert.Equal(1, counting.RangedReads);
        var together = new List<Squash.Index.Model.PartitionVectors>();
        foreach (var entry in wanted) together.Add(await ahead.ReadVectorsAsync(m, entry));
        Assert.Equal(1, counting.RangedReads);
        for (int i = 0; i < wanted.Length; i++)
        {
            var alone = await store.ReadVectorsAsync(m, wanted[i]);
            Assert.Equal(alone.Count, together[i].Count);
            Assert.Equal(alone.Data, together[i].Data);
        }
        // A segment the view did not fetch is read from the store.
        var other = m.Partitions.First(p => p.Id % 2 == 0);
        int before = counting.RangedReads;
        var direct = await store.ReadVectorsAsync(m, other);
        int directReads = counting.RangedReads - before;
        Assert.True(directReads > 0);
        Assert.Equal(direct.Data, (await ahead.ReadVectorsAsync(m, other)).Data);
        Assert.Equal(before + 2 * directReads, counting.RangedReads);
        counting.RangedReads = 0;
        await store.PrefetchedAsync(m, []);
        Assert.Equal(0, counting.RangedReads);
    }

    [Fact]
    public async Task AShortOrDamagedPackIsANamedCorruptIndexException()
    {
        var (store, _, m) = await PackedAsync();
        var pack = store.BlobName(m, m.Partitions[0].Vectors);
        var bytes = await store.Blobs.ReadAllAsync(pack);

        var last = m.Partitions.MaxBy(p => p.Vectors.Offset)!;
        await store.Blobs.WriteAsync(pack, bytes.AsMemory(0, (int)(last.Vectors.Offset!.Value + last.Vectors.Bytes / 2)), WriteCondition.Overwrite);
        var shortPack = await Assert.ThrowsAsync<CorruptIndexException>(() => store.PrefetchedAsync(m, m.Partitions.Select(p => p.Vectors)));
        Assert.Contains(pack, shortPack.Message);

        var damaged = (byte[])bytes.Clone();
        var first = m.Partitions[0].Vectors;
        damaged[first.Offset!.Value + first.Bytes - 5] ^= 0x40;
        await store.Blobs.WriteAsync(pack, damaged, WriteCondition.Overwrite);
        var ahead = await store.PrefetchedAsync(m, m.Partitions.Select(p => p.Vectors));
        var flipped = await Assert.ThrowsAsync<CorruptIndexException>(() => ahead.ReadVectorsAsync(m, m.Partitions[0]));
        Assert.Contains(IndexStore.PackedName(pack, first.Offset.Value, first.Bytes), flipped.Message);
    }
}
