using Squash.Index.Model;
using Squash.Storage;

namespace Squash.Testing;

/// <summary>
/// Publishes a copy of the current version with every segment moved into the two packs an ingest run writes
/// (<see cref="SegmentPack"/>): the same bytes, read back by ranged reads. Lets tests hold a packed reader against the
/// version it was copied from and against brute force, with every kind of segment (routing, base codes, vectors by rows,
/// attributes) in a pack.
/// </summary>
internal static class PackedVersion
{
    public static async Task<IndexManifest> RepackCurrentAsync(IndexStore store, string? version = null)
    {
        var m = await store.OpenCurrentAsync();
        var index = new SegmentPack(SegmentPack.IndexName);
        var vectors = new SegmentPack(SegmentPack.VectorsName);
        async Task<SegmentRef> Move(SegmentRef s, SegmentPack into) => into.Add(s.Offset is { } offset
            ? await store.Blobs.ReadRangeAsync(store.BlobName(m, s), offset, checked((int)s.Bytes))
            : await store.Blobs.ReadAllAsync(store.BlobName(m, s)));
        var routing = await Move(m.Routing, index);
        var partitions = new List<PartitionEntry>();
        foreach (var p in m.Partitions)
        {
            if (p.IsComposite) throw new InvalidOperationException("repack copies plain partitions only");
            partitions.Add(p with
            {
                Codes = await Move(p.Codes, index),
                Vectors = await Move(p.Vectors, vectors),
                Attributes = p.Attributes is null ? null : await Move(p.Attributes, index),
            });
        }
        var packed = m with
        {
            Version = version ?? IndexStore.NewVersionId(), Routing = routing, Partitions = partitions,
            FormatVersion = IndexManifest.FormatVersionFor(routing, partitions),
        };
        var sink = store.CreateSink(packed.Version);
        await sink.WriteAsync(index.Name, index.ToBytes(), CancellationToken.None);
        await sink.WriteAsync(vectors.Name, vectors.ToBytes(), CancellationToken.None);
        var published = await store.PublishAsync(sink, packed);
        if (!published.Published) throw new InvalidOperationException($"the packed copy {packed.Version} did not publish: {published.Current} is current");
        return packed;
    }

    /// <summary>
    /// Publishes a manifest-only version that names every segment of <paramref name="m"/> where it lives, as an ingest run
    /// that touched nothing would: its packs stay in <paramref name="m"/>'s folder, referenced.
    /// </summary>
    public static async Task<IndexManifest> PublishReferencingAsync(IndexStore store, IndexManifest m)
    {
        SegmentRef Ref(SegmentRef s) => s with { Version = s.Version ?? m.Version };
        var referencing = m with
        {
            Version = IndexStore.NewVersionId(),
            Routing = Ref(m.Routing),
            Partitions = m.Partitions.Select(p => p with
            {
                Codes = Ref(p.Codes), Vectors = Ref(p.Vectors), Attributes = p.Attributes is null ? null : Ref(p.Attributes),
            }).ToArray(),
        };
        var published = await store.PublishAsync(store.CreateSink(referencing.Version), referencing);
        if (!published.Published) throw new InvalidOperationException($"{referencing.Version} did not publish: {published.Current} is current");
        return referencing;
    }
}
