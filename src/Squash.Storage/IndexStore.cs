using System.Text.Json;
using Squash.Index.Build;
using Squash.Index.Format;
using Squash.Index.Model;

namespace Squash.Storage;

/// <summary>
/// One index inside a blob store, with the publish protocol that keeps readers safe:
/// <code>
/// {index}/versions/{version}/routing.seg, pNNNNN.codes.seg, pNNNNN.vectors.seg   (segments, written first)
/// {index}/versions/{version}/manifest.json                                      (then the manifest, create-only)
/// {index}/current                                                               (last: a pointer moved by compare-and-swap)
/// </code>
/// A reader resolves current → manifest → segments, so an interrupted build leaves the previous
/// version serving, and two concurrent builds cannot both win the pointer.
/// </summary>
public sealed partial class IndexStore
{
    private long _bytesRead;

    public IndexStore(IBlobStore blobs, string indexName = "")
    {
        Blobs = blobs;
        Name = indexName.Trim('/');
        Prefix = Name.Length == 0 ? "" : Name + "/";
    }

    public IBlobStore Blobs { get; }
    public string Name { get; }
    private string Prefix { get; }
    private string CurrentName => Prefix + "current";

    /// <summary>Bytes read from the blob store by this instance (for per-query statistics).</summary>
    public long BytesRead => Interlocked.Read(ref _bytesRead);

    public string VersionPrefix(string version) => $"{Prefix}versions/{version}/";

    internal sealed record CurrentPointer(string Version, string Manifest);

    /// <summary>The version the pointer names, with the pointer's ETag; null when nothing is published.</summary>
    public async Task<(string Version, string ETag)?> GetCurrentAsync(CancellationToken ct = default)
    {
        var info = await Blobs.GetInfoAsync(CurrentName, ct).ConfigureAwait(false);
        if (info is null) return null;
        byte[] bytes;
        try
        {
            bytes = await Blobs.ReadAllAsync(CurrentName, ct).ConfigureAwait(false);
        }
        catch (BlobNotFoundException)
        {
            return null;
        }
        var pointer = ParsePointer(bytes);
        return (pointer.Version, info.ETag);
    }

    private CurrentPointer ParsePointer(byte[] bytes)
    {
        try
        {
            var p = JsonSerializer.Deserialize(bytes, PointerJson.Default.CurrentPointer);
            if (p is null || string.IsNullOrWhiteSpace(p.Version)) throw new CorruptIndexException($"'{CurrentName}' in {Blobs.Description} names no version");
            return p;
        }
        catch (JsonException e)
        {
            throw new CorruptIndexException($"'{CurrentName}' in {Blobs.Description} is not valid JSON: {e.Message}");
        }
    }

    /// <summary>A fresh version id that sorts after every existing one.</summary>
    public async Task<string> NewVersionIdAsync(CancellationToken ct = default)
    {
        int max = 0;
        await foreach (var b in Blobs.ListAsync(Prefix + "versions/", ct).ConfigureAwait(false))
        {
            var rest = b.Name[(Prefix.Length + "versions/".Length)..];
            var v = rest.Split('/')[0];
            if (v.Length > 1 && v[0] == 'v' && int.TryParse(v.AsSpan(1), out int n)) max = Math.Max(max, n);
        }
        return $"v{max + 1:D6}";
    }

    /// <summary>A sink that writes segments of one version, create-only.</summary>
    public ISegmentSink CreateSink(string version) => new VersionSink(this, version);

    private sealed class VersionSink(IndexStore store, string version) : ISegmentSink
    {
        public Task WriteAsync(string name, ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
            store.Blobs.WriteAsync(store.VersionPrefix(version) + name, data, WriteCondition.IfNotExists, cancellationToken);
    }

    /// <summary>Writes the manifest, then moves the current pointer from <paramref name="expectedPrevious"/> (null: none).</summary>
    public async Task PublishAsync(IndexManifest manifest, (string Version, string ETag)? expectedPrevious, CancellationToken ct = default)
    {
        var manifestName = VersionPrefix(manifest.Version) + "manifest.json";
        await Blobs.WriteAsync(manifestName, manifest.ToJson(), WriteCondition.IfNotExists, ct).ConfigureAwait(false);
        var pointer = JsonSerializer.SerializeToUtf8Bytes(new CurrentPointer(manifest.Version, manifestName), PointerJson.Default.CurrentPointer);
        var condition = expectedPrevious is { } prev ? WriteCondition.IfMatch(prev.ETag) : WriteCondition.IfNotExists;
        await Blobs.WriteAsync(CurrentName, pointer, condition, ct).ConfigureAwait(false);
    }

    /// <summary>Removes every blob of a version (a failed build's leftovers, or garbage collection).</summary>
    public async Task<int> DeleteVersionAsync(string version, CancellationToken ct = default)
    {
        var names = new List<string>();
        await foreach (var b in Blobs.ListAsync(VersionPrefix(version), ct).ConfigureAwait(false)) names.Add(b.Name);
        foreach (var n in names) await Blobs.DeleteAsync(n, ct).ConfigureAwait(false);
        return names.Count;
    }

    /// <summary>Every version that has any blob (published, superseded or left by a failed build), oldest first.</summary>
    public async Task<IReadOnlyList<string>> ListVersionsAsync(CancellationToken ct = default)
    {
        var root = Prefix + "versions/";
        var versions = new SortedSet<string>(StringComparer.Ordinal);
        await foreach (var b in Blobs.ListAsync(root, ct).ConfigureAwait(false))
        {
            var rest = b.Name[root.Length..];
            int slash = rest.IndexOf('/');
            if (slash > 0) versions.Add(rest[..slash]);
        }
        // Ids are zero-padded (v000042), so ordinal order is age order.
        return versions.ToList();
    }

    /// <summary>
    /// Deletes every version but the <paramref name="keep"/> newest and the one <c>current</c> names,
    /// and returns the deleted ids. A reader that opened an older version before this ran may lose it,
    /// which is why <paramref name="keep"/> exists: keep enough for in-flight queries.
    /// </summary>
    public async Task<IReadOnlyList<string>> CollectGarbageAsync(int keep, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(keep);
        var current = await GetCurrentAsync(ct).ConfigureAwait(false);
        var versions = await ListVersionsAsync(ct).ConfigureAwait(false);
        var kept = new HashSet<string>(versions.Skip(Math.Max(0, versions.Count - keep)), StringComparer.Ordinal);
        if (current is { } c) kept.Add(c.Version);
        var deleted = new List<string>();
        foreach (var v in versions)
        {
            if (kept.Contains(v)) continue;
            await DeleteVersionAsync(v, ct).ConfigureAwait(false);
            deleted.Add(v);
        }
        return deleted;
    }

    public async Task<IndexManifest> ReadManifestAsync(string version, CancellationToken ct = default)
    {
        var name = VersionPrefix(version) + "manifest.json";
        var bytes = await ReadCountedAsync(name, ct).ConfigureAwait(false);
        var m = IndexManifest.Parse(bytes, name);
        if (m.Version != version) throw new CorruptIndexException($"manifest '{name}' says it is version {m.Version}");
        return m;
    }

    /// <summary>Resolves current → manifest. Throws <see cref="IndexNotFoundException"/> when nothing is published.</summary>
    public async Task<IndexManifest> OpenCurrentAsync(CancellationToken ct = default)
    {
        var current = await GetCurrentAsync(ct).ConfigureAwait(false)
            ?? throw new IndexNotFoundException($"no index is published at {Blobs.Description}{(Name.Length > 0 ? " under '" + Name + "'" : "")} (no 'current' pointer)");
        return await ReadManifestAsync(current.Version, ct).ConfigureAwait(false);
    }

    public async Task<RoutingData> ReadRoutingAsync(IndexManifest m, CancellationToken ct = default)
    {
        var name = VersionPrefix(m.Version) + m.Routing.Name;
        return RoutingData.FromSegment(await ReadCountedAsync(name, ct).ConfigureAwait(false), name, m);
    }

    public async Task<PartitionCodes> ReadCodesAsync(IndexManifest m, PartitionEntry p, CancellationToken ct = default)
    {
        var name = VersionPrefix(m.Version) + p.Codes.Name;
        return PartitionCodes.FromSegment(await ReadCountedAsync(name, ct).ConfigureAwait(false), name, p, m.GlobalDimensions);
    }

    public async Task<PartitionVectors> ReadVectorsAsync(IndexManifest m, PartitionEntry p, CancellationToken ct = default)
    {
        var name = VersionPrefix(m.Version) + p.Vectors.Name;
        return PartitionVectors.FromSegment(await ReadCountedAsync(name, ct).ConfigureAwait(false), name, p, m.InternalDimensions);
    }

    public async Task<PartitionAttributes> ReadAttributesAsync(IndexManifest m, PartitionEntry p, CancellationToken ct = default)
    {
        if (m.Attributes is null || p.Attributes is null) throw new CorruptIndexException($"index version {m.Version} has no attributes");
        var name = VersionPrefix(m.Version) + p.Attributes.Name;
        return PartitionAttributes.FromSegment(await ReadCountedAsync(name, ct).ConfigureAwait(false), name, p, m.Attributes);
    }

    // Cached reads for warm instances. A segment's decoded size is close to its stored size (the
    // arrays are the sections), so the manifest's byte count is the cache charge.

    /// <summary>The partition's codes through <paramref name="cache"/>: read and decoded once per instance.</summary>
    public Task<PartitionCodes> ReadCodesAsync(IndexManifest m, PartitionEntry p, SegmentCache cache, CancellationToken ct = default) =>
        cache.GetOrLoadAsync(new SegmentKey(Name, m.Version, p.Id, SegmentKind.Codes), t => ReadCodesAsync(m, p, t), _ => p.Codes.Bytes, ct);

    /// <summary>The partition's raw vectors through <paramref name="cache"/>.</summary>
    public Task<PartitionVectors> ReadVectorsAsync(IndexManifest m, PartitionEntry p, SegmentCache cache, CancellationToken ct = default) =>
        cache.GetOrLoadAsync(new SegmentKey(Name, m.Version, p.Id, SegmentKind.Vectors), t => ReadVectorsAsync(m, p, t), _ => p.Vectors.Bytes, ct);

    /// <summary>The partition's attributes through <paramref name="cache"/>.</summary>
    public Task<PartitionAttributes> ReadAttributesAsync(IndexManifest m, PartitionEntry p, SegmentCache cache, CancellationToken ct = default) =>
        cache.GetOrLoadAsync(new SegmentKey(Name, m.Version, p.Id, SegmentKind.Attributes), t => ReadAttributesAsync(m, p, t), _ => p.Attributes?.Bytes ?? 0, ct);

    /// <summary>The routing data through <paramref name="cache"/> (partition -1: it belongs to the whole version).</summary>
    public Task<RoutingData> ReadRoutingAsync(IndexManifest m, SegmentCache cache, CancellationToken ct = default) =>
        cache.GetOrLoadAsync(new SegmentKey(Name, m.Version, -1, SegmentKind.Routing), t => ReadRoutingAsync(m, t), _ => m.Routing.Bytes, ct);

    private async Task<byte[]> ReadCountedAsync(string name, CancellationToken ct)
    {
        byte[] bytes;
        try
        {
            bytes = await Blobs.ReadAllAsync(name, ct).ConfigureAwait(false);
        }
        catch (BlobNotFoundException)
        {
            throw new CorruptIndexException($"blob '{name}' named by the index is missing from {Blobs.Description}");
        }
        Interlocked.Add(ref _bytesRead, bytes.LongLength);
        return bytes;
    }
}

public sealed class IndexNotFoundException(string message) : Exception(message);

/// <summary>Source-generated (camelCase, as before) so the function app can be compiled ahead of time.</summary>
[System.Text.Json.Serialization.JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
[System.Text.Json.Serialization.JsonSerializable(typeof(IndexStore.CurrentPointer))]
internal sealed partial class PointerJson : System.Text.Json.Serialization.JsonSerializerContext;
