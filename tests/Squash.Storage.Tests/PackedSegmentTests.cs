using System.Text;
using Squash.Index.Build;
using Squash.Index.Format;
using Squash.Index.Model;
using Squash.Testing;

namespace Squash.Storage.Tests;

/// <summary>
/// Segments packed into shared blobs (what an ingest run writes: <see cref="SegmentPack"/>) and named by the manifest as
/// (pack, offset, bytes): read back equal to the whole-blob segments they were copied from, by ranged reads; a damaged or
/// short pack is an error naming the pack and the range; gc keeps a pack while a kept version references it.
/// </summary>
public sealed class PackedSegmentTests : IDisposable
{
    private const int N = 600, Dims = 16;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-packed-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    private static float[] Data(int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, N * Dims).Select(_ => (float)rng.NextDouble()).ToArray();
    }

    private async Task<(IndexStore Store, IndexManifest Built, IndexManifest Packed)> BuiltAndPacked()
    {
        var store = new IndexStore(new FolderBlobStore(_root), "packed");
        var built = await IndexPublisher.BuildAndPublishAsync(store, Data(3), N, Dims, new IndexBuildOptions { Partitions = 4, Seed = 3 });
        var packed = await PackedVersion.RepackCurrentAsync(store);
        return (store, built, packed);
    }

    private static async Task<List<string>> Names(IBlobStore s, string prefix)
    {
        var names = new List<string>();
        await foreach (var b in s.ListAsync(prefix)) names.Add(b.Name[prefix.Length..]);
        return names;
    }

    [Fact]
    public async Task EverySegmentReadFromPacksEqualsTheWholeBlobItWasCopiedFrom()
    {
        var (store, built, packed) = await BuiltAndPacked();
        Assert.Equal(IndexManifest.PackedFormatVersion, packed.FormatVersion);
        Assert.Equal(new[] { SegmentPack.IndexName, SegmentPack.VectorsName, IndexStore.ManifestName }.Order(StringComparer.Ordinal), (await Names(store.Blobs, store.VersionPrefix(packed.Version))).Order(StringComparer.Ordinal));
        var reopened = await store.OpenCurrentAsync();
        Assert.Equal(packed.Version, reopened.Version);
        Assert.All(IndexStore.BlobsNamedBy(reopened), s => Assert.NotNull(s.Offset));

        Assert.Equal((await store.ReadRoutingAsync(built)).Centroids, (await store.ReadRoutingAsync(reopened)).Centroids);
        for (int p = 0; p < built.Partitions.Count; p++)
        {
            var (a, b) = (built.Partitions[p], reopened.Partitions[p]);
            var (codesA, codesB) = (await store.ReadCodesAsync(built, a), await store.ReadCodesAsync(reopened, b));
            Assert.Equal(codesA.Cells, codesB.Cells);
            Assert.Equal(codesA.Signs, codesB.Signs);
            Assert.Equal(codesA.Ids, codesB.Ids);
            var whole = await store.ReadVectorsAsync(built, a);
            Assert.Equal(whole.Data, (await store.ReadVectorsAsync(reopened, b)).Data);
            // Rows by ranged reads of the vector pack: the block table's ranges are positions in the pack.
            var rows = new[] { 0, b.Count / 2, b.Count - 1 };
            var fetched = await store.ReadVectorRowsAsync(reopened, b, rows, cache: null);
            Assert.True(fetched.Requests >= 2, $"partition {p}: {fetched.Requests} requests");
            foreach (int r in rows) Assert.Equal(whole.Row(r).ToArray(), fetched.Vectors.Row(r).ToArray());
        }
    }

    [Fact]
    public async Task AFlippedByteInAPackedSegmentIsAnErrorNamingThePackAndItsRange()
    {
        var (store, _, packed) = await BuiltAndPacked();
        var victim = packed.Partitions[1].Codes;
        var packName = store.BlobName(packed, victim);
        var bytes = await store.Blobs.ReadAllAsync(packName);
        bytes[victim.Offset!.Value + victim.Bytes / 2] ^= 0x10;
        await store.Blobs.WriteAsync(packName, bytes, WriteCondition.Overwrite);

        var e = await Assert.ThrowsAsync<CorruptIndexException>(() => store.ReadCodesAsync(packed, packed.Partitions[1]));
        Assert.Contains(IndexStore.PackedName(packName, victim.Offset.Value, victim.Bytes), e.Message);
        Assert.Contains("checksum", e.Message);
        // The segments beside it in the same pack still read.
        await store.ReadCodesAsync(packed, packed.Partitions[0]);
        await store.ReadCodesAsync(packed, packed.Partitions[2]);
    }

    [Fact]
    public async Task AShortPackIsAnErrorNotACrash()
    {
        var (store, _, packed) = await BuiltAndPacked();
        var last = packed.Partitions[^1];
        var packName = store.BlobName(packed, last.Vectors);
        var bytes = await store.Blobs.ReadAllAsync(packName);
        await store.Blobs.WriteAsync(packName, bytes.AsMemory(0, bytes.Length - 100), WriteCondition.Overwrite);

        var whole = await Assert.ThrowsAsync<CorruptIndexException>(() => store.ReadVectorsAsync(packed, last));
        Assert.Contains(packName, whole.Message);
        // By rows: the head still reads, the last block lies past the end.
        var rows = await Assert.ThrowsAsync<CorruptIndexException>(() => store.ReadVectorRowsAsync(packed, last, [last.Count - 1], cache: null));
        Assert.Contains(packName, rows.Message);
        var incomplete = await Assert.ThrowsAsync<CorruptIndexException>(() => store.VerifyCompleteAsync(packed));
        Assert.Contains("incomplete", incomplete.Message);
        Assert.Contains(SegmentPack.VectorsName, incomplete.Message);
        // Partitions before it still read.
        await store.ReadVectorsAsync(packed, packed.Partitions[0]);
    }

    [Fact]
    public async Task AManifestThatPacksSegmentsUnderAnOlderFormatVersionIsRefused()
    {
        var (_, _, packed) = await BuiltAndPacked();
        var json = packed.ToJson();
        Assert.Contains("\"offset\"", Encoding.UTF8.GetString(json));
        var older = (packed with { FormatVersion = IndexManifest.ExtendedFormatVersion }).ToJson();
        var e = Assert.Throws<CorruptIndexException>(() => IndexManifest.Parse(older, "m.json"));
        Assert.Contains("packed", e.Message);
        var negative = packed with { Routing = packed.Routing with { Offset = -1 } };
        Assert.Throws<CorruptIndexException>(() => IndexManifest.Parse(negative.ToJson(), "m.json"));
    }

    [Fact]
    public async Task GcKeepsAPackWhileAKeptVersionReferencesItAndDeletesItAfter()
    {
        var (store, built, packed) = await BuiltAndPacked();
        // A version that names the packed version's segments where they are (as an ingest that leaves partitions untouched).
        var referencing = await PackedVersion.PublishReferencingAsync(store, packed);
        Assert.Equal([packed.Version], IndexStore.ReferencedVersions(referencing));
        await store.VerifyCompleteAsync(referencing);

        var gc = await store.CollectGarbageAsync(keep: 0, grace: TimeSpan.Zero);
        Assert.Equal([built.Version], gc.Deleted);
        Assert.Contains(gc.Kept, k => k.Version == packed.Version && k.Reason == IndexStore.KeptReason.Referenced);
        Assert.Contains(SegmentPack.IndexName, await Names(store.Blobs, store.VersionPrefix(packed.Version)));
        var codes = await store.ReadCodesAsync(referencing, referencing.Partitions[0]);
        Assert.Equal(referencing.Partitions[0].Count, codes.Count);

        // Copied into packs of its own, nothing references the old packs: the next gc removes them.
        var repacked = await PackedVersion.RepackCurrentAsync(store);
        var again = await store.CollectGarbageAsync(keep: 0, grace: TimeSpan.Zero);
        Assert.Equal([packed.Version, referencing.Version], again.Deleted);
        Assert.Empty(await Names(store.Blobs, store.VersionPrefix(packed.Version)));
        await store.VerifyCompleteAsync(repacked);
        Assert.Equal(codes.Cells, (await store.ReadCodesAsync(repacked, repacked.Partitions[0])).Cells);
    }

    [Fact]
    public async Task ASuccessorPublishedIfCurrentNeverReplacesANewerVersion()
    {
        var (store, built, packed) = await BuiltAndPacked();
        // A successor of the packed version (as ingest publishes a measured calibration): moves the pointer from it.
        IndexManifest Successor(IndexManifest of) => of with
        {
            Version = IndexStore.NewVersionId(),
            Routing = of.Routing with { Version = of.Routing.Version ?? of.Version },
            Partitions = of.Partitions.Select(p => p with
            {
                Codes = p.Codes with { Version = p.Codes.Version ?? of.Version }, Vectors = p.Vectors with { Version = p.Vectors.Version ?? of.Version },
            }).ToArray(),
        };
        var first = Successor(packed);
        Assert.True((await store.PublishIfCurrentAsync(store.CreateSink(first.Version), first, packed.Version)).Published);
        Assert.Equal(first.Version, (await store.GetCurrentAsync())!.Value.Version);

        // Derived from a version that is no longer current: refused, its manifest removed, the newer version stays.
        var stale = Successor(packed);
        var refused = await store.PublishIfCurrentAsync(store.CreateSink(stale.Version), stale, packed.Version);
        Assert.False(refused.Published);
        Assert.Equal(first.Version, refused.Current);
        Assert.Equal(first.Version, (await store.GetCurrentAsync())!.Value.Version);
        Assert.Empty(await Names(store.Blobs, store.VersionPrefix(stale.Version)));
        // And one that is not newer than what it follows is a caller's error.
        await Assert.ThrowsAsync<ArgumentException>(() => store.PublishIfCurrentAsync(store.CreateSink(built.Version), built, first.Version));
    }
    /// <summary>Records the prefixes listed through it.</summary>
    private sealed class ListingStore(IBlobStore inner) : IBlobStore
    {
        public readonly System.Collections.Concurrent.ConcurrentQueue<string> Listed = new();
        public string Description => inner.Description;
        public Task<byte[]> ReadAllAsync(string name, CancellationToken ct = default) => inner.ReadAllAsync(name, ct);
        public Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken ct = default) => inner.ReadRangeAsync(name, offset, length, ct);
        public Task<BlobInfo?> GetInfoAsync(string name, CancellationToken ct = default) => inner.GetInfoAsync(name, ct);
        public IAsyncEnumerable<BlobInfo> ListAsync(string prefix, CancellationToken ct = default) { Listed.Enqueue(prefix); return inner.ListAsync(prefix, ct); }
        public Task<bool> DeleteAsync(string name, CancellationToken ct = default) => inner.DeleteAsync(name, ct);
        public Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken ct = default) => inner.WriteAsync(name, data, condition, ct);
    }

    /// <summary>A manifest-only successor of <paramref name="of"/> naming its segments where they are, with <paramref name="change"/> applied.</summary>
    private static IndexManifest Derived(IndexManifest of, Func<PartitionEntry, PartitionEntry>? change = null)
    {
        SegmentRef Ref(SegmentRef s) => s with { Version = s.Version ?? of.Version };
        var partitions = of.Partitions.Select(p => p with { Codes = Ref(p.Codes), Vectors = Ref(p.Vectors), Attributes = p.Attributes is null ? null : Ref(p.Attributes) }).ToArray();
        if (change is not null) partitions[0] = change(partitions[0]);
        return of with { Version = IndexStore.NewVersionId(), Routing = Ref(of.Routing), Partitions = partitions };
    }

    [Fact]
    public async Task AVersionDerivedFromTheCurrentOneListsOnlyItsOwnFolderForWhatItsBaseAlreadyNames()
    {
        var listing = new ListingStore(new FolderBlobStore(_root));
        var store = new IndexStore(listing, "packed");
        var built = await IndexPublisher.BuildAndPublishAsync(store, Data(3), N, Dims, new IndexBuildOptions { Partitions = 4, Seed = 3 });

        var derived = Derived(built);
        listing.Listed.Clear();
        Assert.True((await store.PublishAsync(store.CreateSink(derived.Version), derived, verifiedBase: built)).Published);
        Assert.Equal([store.VersionPrefix(derived.Version)], listing.Listed);
        Assert.Equal(derived.Version, (await store.OpenCurrentAsync()).Version);

        // Without a base to vouch for them, the folder they are in is listed (and its blobs checked).
        listing.Listed.Clear();
        await store.VerifyCompleteAsync(derived);
        Assert.Equal([store.VersionPrefix(derived.Version), store.VersionPrefix(built.Version)], listing.Listed);
    }

    [Fact]
    public async Task ASegmentItsBaseDoesNotNameTheSameWayIsCheckedAndRefused()
    {
        var store = new IndexStore(new FolderBlobStore(_root), "packed");
        var built = await IndexPublisher.BuildAndPublishAsync(store, Data(3), N, Dims, new IndexBuildOptions { Partitions = 4, Seed = 3 });
        long bytes = built.Partitions[0].Codes.Bytes;

        // The base's blob with a size the base does not give it: not vouched for, so listed and found wrong.
        var resized = Derived(built, p => p with { Codes = p.Codes with { Bytes = bytes + 1 } });
        var wrong = await Assert.ThrowsAsync<CorruptIndexException>(() => store.PublishAsync(store.CreateSink(resized.Version), resized, verifiedBase: built));
        Assert.Equal($"version {resized.Version} in {store.Blobs.Description} is incomplete: blob '{store.BlobName(resized, resized.Partitions[0].Codes)}' it references has {bytes} bytes, the manifest says {bytes + 1}", wrong.Message);

        // A segment of its own folder that was never written.
        var missing = Derived(built, p => p with { Codes = new SegmentRef("p00000.codes.seg", bytes) });
        var absent = await Assert.ThrowsAsync<CorruptIndexException>(() => store.PublishAsync(store.CreateSink(missing.Version), missing, verifiedBase: built));
        Assert.Equal($"version {missing.Version} in {store.Blobs.Description} is incomplete: blob '{store.VersionPrefix(missing.Version)}p00000.codes.seg' is missing", absent.Message);
        Assert.Equal(built.Version, (await store.GetCurrentAsync())!.Value.Version);
    }
}
