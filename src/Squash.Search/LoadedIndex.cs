using Squash.Core;
using Squash.Index.Model;
using Squash.Search.Filters;
using Squash.Storage;

namespace Squash.Search;

/// <summary>An index with its routing data and (lazily) its partitions in memory.</summary>
public sealed class LoadedIndex
{
    private readonly PartitionCodes?[] _codes;
    private readonly PartitionVectors?[] _vectors;
    private readonly PartitionAttributes?[] _attributes;
    private readonly IndexStore _store;

    private LoadedIndex(IndexStore store, IndexManifest manifest, RoutingData routing)
    {
        _store = store;
        Manifest = manifest;
        Routing = routing;
        Space = new MetricSpace(MetricSpace.Parse(manifest.Metric), manifest.Dimensions, manifest.MaxNorm);
        _codes = new PartitionCodes?[manifest.Partitions.Count];
        _vectors = new PartitionVectors?[manifest.Partitions.Count];
        _attributes = new PartitionAttributes?[manifest.Partitions.Count];
        Filters = new FilterCompiler(manifest.Attributes);
    }

    public IndexManifest Manifest { get; }
    public RoutingData Routing { get; }
    public MetricSpace Space { get; }
    public IndexStore Store => _store;
    public int PartitionCount => _codes.Length;
    /// <summary>Compiles filters against this index's schema (dictionaries built once).</summary>
    public FilterCompiler Filters { get; }
    private string?[]? _keys;

    /// <summary>The user's string id of a row, or null (no ids in the index, or none given for it).</summary>
    public string? KeyOf(long row)
    {
        if (Manifest.Attributes is not { HasIds: true }) return null;
        if (_keys is null)
        {
            var keys = new string?[Manifest.Count];
            for (int p = 0; p < PartitionCount; p++)
            {
                var ids = Codes(p).Ids;
                var k = Attributes(p)!.Keys!;
                for (int i = 0; i < ids.Length; i++) keys[ids[i]] = k[i];
            }
            _keys = keys;
        }
        return _keys[row];
    }

    /// <summary>Opens the current version; with <paramref name="loadAll"/> every partition is read and validated now.</summary>
    public static async Task<LoadedIndex> OpenAsync(IndexStore store, bool loadAll = true, CancellationToken ct = default) =>
        await Open(store, await store.OpenCurrentAsync(ct).ConfigureAwait(false), loadAll, ct).ConfigureAwait(false);

    /// <summary>Opens one published version (tree nodes pin the coordinator's version).</summary>
    public static async Task<LoadedIndex> OpenVersionAsync(IndexStore store, string version, bool loadAll = true, CancellationToken ct = default) =>
        await Open(store, await store.ReadManifestAsync(version, ct).ConfigureAwait(false), loadAll, ct).ConfigureAwait(false);

    /// <summary>
    /// Opens one version whose partitions live in a memory-bounded <see cref="SegmentCache"/> shared by
    /// every index of the process (a warm instance's data retention): partitions are fetched with
    /// <see cref="GetPartitionAsync"/> and may be evicted between queries.
    /// </summary>
    public static async Task<LoadedIndex> OpenCachedAsync(IndexStore store, string version, SegmentCache cache, CancellationToken ct = default)
    {
        var index = await Open(store, await store.ReadManifestAsync(version, ct).ConfigureAwait(false), loadAll: false, ct).ConfigureAwait(false);
        index._cache = cache;
        return index;
    }

    private SegmentCache? _cache;

    /// <summary>One partition's segments for a scan, through the cache when there is one. Miss tells whether this call read the store.</summary>
    public async Task<(PartitionCodes Codes, PartitionVectors Vectors, bool Miss, long BytesRead)> GetPartitionAsync(int p, CancellationToken ct = default)
    {
        if (_cache is null)
        {
            bool miss = !IsLoaded(p);
            long bytes = await EnsureLoadedAsync([p], ct).ConfigureAwait(false);
            return (Codes(p), Vectors(p), miss, bytes);
        }
        var entry = Manifest.Partitions[p];
        long read = 0;
        var codes = await _cache.GetOrLoadAsync(new SegmentKey(_store.Name, Manifest.Version, p, SegmentKind.Codes), async t =>
        {
            var c = await _store.ReadCodesAsync(Manifest, entry, t).ConfigureAwait(false);
            Interlocked.Add(ref read, c.StoredBytes);
            return c;
        }, _ => entry.Codes.Bytes, ct).ConfigureAwait(false);
        var vectors = await _cache.GetOrLoadAsync(new SegmentKey(_store.Name, Manifest.Version, p, SegmentKind.Vectors), async t =>
        {
            var v = await _store.ReadVectorsAsync(Manifest, entry, t).ConfigureAwait(false);
            Interlocked.Add(ref read, v.StoredBytes);
            return v;
        }, _ => entry.Vectors.Bytes, ct).ConfigureAwait(false);
        return (codes, vectors, read > 0, read);
    }

    private static async Task<LoadedIndex> Open(IndexStore store, IndexManifest manifest, bool loadAll, CancellationToken ct)
    {
        var routing = await store.ReadRoutingAsync(manifest, ct).ConfigureAwait(false);
        var index = new LoadedIndex(store, manifest, routing);
        if (loadAll)
        {
            await Parallel.ForEachAsync(Enumerable.Range(0, index.PartitionCount), ct, async (p, c) =>
            {
                index._codes[p] = await store.ReadCodesAsync(manifest, manifest.Partitions[p], c).ConfigureAwait(false);
                index._vectors[p] = await store.ReadVectorsAsync(manifest, manifest.Partitions[p], c).ConfigureAwait(false);
                if (manifest.Attributes is not null)
                    index._attributes[p] = await store.ReadAttributesAsync(manifest, manifest.Partitions[p], c).ConfigureAwait(false);
            }).ConfigureAwait(false);
        }
        return index;
    }

    /// <summary>
    /// Loads the partitions that are not in memory yet, in parallel, one load per partition however many
    /// callers ask; returns the bytes this call read from the store (0 when everything was warm).
    /// </summary>
    public async Task<long> EnsureLoadedAsync(IEnumerable<int> partitions, CancellationToken ct = default)
    {
        var pending = new List<Task<long>>();
        foreach (int p in partitions.Distinct())
        {
            if (_codes[p] is not null && _vectors[p] is not null) continue;
            pending.Add(_loads.GetOrAdd(p, key => new Lazy<Task<long>>(() => LoadAsync(key))).Value);
        }
        long bytes = 0;
        foreach (var t in pending) bytes += await t.WaitAsync(ct).ConfigureAwait(false);
        return bytes;
    }

    private readonly System.Collections.Concurrent.ConcurrentDictionary<int, Lazy<Task<long>>> _loads = new();

    private async Task<long> LoadAsync(int p)
    {
        try
        {
            var entry = Manifest.Partitions[p];
            var codes = _store.ReadCodesAsync(Manifest, entry);
            var vectors = _store.ReadVectorsAsync(Manifest, entry);
            _codes[p] = await codes.ConfigureAwait(false);
            _vectors[p] = await vectors.ConfigureAwait(false);
            return _codes[p]!.StoredBytes + _vectors[p]!.StoredBytes;
        }
        catch
        {
            _loads.TryRemove(p, out _); // let a later query retry a failed load
            throw;
        }
    }

    public bool IsLoaded(int p) => _codes[p] is not null && _vectors[p] is not null;

    public PartitionCodes Codes(int p) => _codes[p] ?? LoadSync(p).Codes;
    public PartitionVectors Vectors(int p) => _vectors[p] ?? LoadSync(p).Vectors;

    /// <summary>A partition's attributes; null when the index has none.</summary>
    public PartitionAttributes? Attributes(int p)
    {
        if (Manifest.Attributes is null) return null;
        if (_attributes[p] is { } a) return a;
        lock (_attributes)
            return _attributes[p] ??= _store.ReadAttributesAsync(Manifest, Manifest.Partitions[p]).GetAwaiter().GetResult();
    }

    private (PartitionCodes Codes, PartitionVectors Vectors) LoadSync(int p)
    {
        lock (_codes)
        {
            var entry = Manifest.Partitions[p];
            _codes[p] ??= _store.ReadCodesAsync(Manifest, entry).GetAwaiter().GetResult();
            _vectors[p] ??= _store.ReadVectorsAsync(Manifest, entry).GetAwaiter().GetResult();
            return (_codes[p]!, _vectors[p]!);
        }
    }

    /// <summary>Bytes of OSQ codes (sign bits included) per vector, averaged over the index.</summary>
    public double CodeBytesPerVector => Manifest.Partitions.Sum(p => (double)p.BitsPerVector * p.Count) / Math.Max(1, Manifest.Count) / 8;
}
