using Squash.Core;
using Squash.Index.Model;
using Squash.Search.Filters;
using Squash.Storage;

namespace Squash.Search;

/// <summary>
/// An opened index version: manifest and routing data in memory; partitions are read when a query needs them
/// (through the segment cache on warm instances), or all at once by <c>OpenAsync</c> for in-process benchmarks.
/// </summary>
public sealed class OpenedIndex
{
    private readonly PartitionCodes?[] _codes;
    private readonly PartitionVectors?[] _vectors;
    private readonly PartitionAttributes?[] _attributes;
    private readonly IndexStore _store;

    private OpenedIndex(IndexStore store, IndexManifest manifest, RoutingData routing)
    {
        _store = store;
        Manifest = manifest;
        Routing = routing;
        Space = new MetricSpace(MetricSpace.Parse(manifest.Metric), manifest.Dimensions, manifest.MaxNorm);
        _codes = new PartitionCodes?[manifest.Partitions.Count];
        _vectors = new PartitionVectors?[manifest.Partitions.Count];
        _attributes = new PartitionAttributes?[manifest.Partitions.Count];
        Filters = new FilterCompiler(manifest.Attributes);
        _rowFetches = new int[manifest.Partitions.Count];
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
            var keys = new string?[Manifest.RowLimit];
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

    private Task<Dictionary<string, long>>? _rowById;

    /// <summary>
    /// The row numbers of the given user ids in this version (ids it does not hold are left out). With string ids the
    /// first call reads every partition's codes and attributes (through the cache) to build the map, once per opened
    /// version; without them the id of a row is its number.
    /// </summary>
    public async Task<HashSet<long>> RowsOfAsync(IEnumerable<string> ids, CancellationToken ct = default)
    {
        var rows = new HashSet<long>();
        if (Manifest.Attributes is not { HasIds: true })
        {
            foreach (var id in ids)
                if (long.TryParse(id, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long row)
                    && row < Manifest.RowLimit && row.ToString(System.Globalization.CultureInfo.InvariantCulture) == id) rows.Add(row);
            return rows;
        }
        Task<Dictionary<string, long>> load;
        lock (_codes) load = _rowById ??= LoadRowMapAsync();
        Dictionary<string, long> map;
        try
        {
            map = await load.WaitAsync(ct).ConfigureAwait(false);
        }
        catch (Exception) when (load.IsFaulted)
        {
            lock (_codes) if (_rowById == load) _rowById = null; // the next call tries again
            throw;
        }
        foreach (var id in ids) if (map.TryGetValue(id, out long row)) rows.Add(row);
        return rows;
    }

    private async Task<Dictionary<string, long>> LoadRowMapAsync()
    {
        var map = new Dictionary<string, long>(StringComparer.Ordinal);
        var parts = new (int[] Ids, string?[] Keys)[PartitionCount];
        await Parallel.ForEachAsync(Enumerable.Range(0, PartitionCount), new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (p, t) =>
        {
            var codes = _codes[p] ?? await _store.ReadCodesAsync(Manifest, Manifest.Partitions[p], FetchCache, t).ConfigureAwait(false);
            var attributes = (await GetAttributesAsync(p, t).ConfigureAwait(false))!;
            parts[p] = (codes.Ids, attributes.Keys!);
        }).ConfigureAwait(false);
        foreach (var (ids, keys) in parts)
            for (int i = 0; i < ids.Length; i++)
                if (keys[i] is { } key) map[key] = ids[i];
        return map;
    }

    /// <summary>
    /// The row numbers of every row of this version that matches at least one of <paramref name="filters"/> (query-language
    /// filters, compiled here): reads every partition's codes (for the row numbers) and attributes through the cache. A strong
    /// read resolves the log tail's deleteWheres this way when they are too many to send to the nodes inside the filter.
    /// </summary>
    public async Task<HashSet<long>> RowsMatchingAnyAsync(IReadOnlyList<System.Text.Json.JsonElement> filters, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(filters);
        var rows = new HashSet<long>();
        if (filters.Count == 0) return rows;
        var parts = new (int[] Ids, PartitionAttributes? Attributes)[PartitionCount];
        await Parallel.ForEachAsync(Enumerable.Range(0, PartitionCount), new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = ct }, async (p, t) =>
        {
            var codes = _codes[p] ?? await _store.ReadCodesAsync(Manifest, Manifest.Partitions[p], FetchCache, t).ConfigureAwait(false);
            parts[p] = (codes.Ids, await GetAttributesAsync(p, t).ConfigureAwait(false));
        }).ConfigureAwait(false);
        // Compiled one at a time: each was bounded when it was written, their sum need not be.
        foreach (var json in filters)
        {
            var filter = Filters.Compile(json);
            Parallel.For(0, PartitionCount, new ParallelOptions { CancellationToken = ct }, p =>
            {
                var (ids, attributes) = parts[p];
                // A filter other than {} names an attribute, so it compiles only where the index has attributes.
                if (filter.MatchesAll || attributes is null) { lock (rows) rows.UnionWith(ids.Select(id => (long)id)); return; }
                var matched = new List<int>();
                MatchingRows(filter, attributes, matched);
                lock (rows) rows.UnionWith(matched.Select(r => (long)ids[r]));
            });
        }
        return rows;
    }

    /// <summary>Opens the current version; with <paramref name="loadAll"/> every partition is read and validated now.</summary>
    public static async Task<OpenedIndex> OpenAsync(IndexStore store, bool loadAll = true, CancellationToken ct = default) =>
        await Open(store, await store.OpenCurrentAsync(ct).ConfigureAwait(false), loadAll, ct).ConfigureAwait(false);

    /// <summary>Opens one published version (tree nodes pin the coordinator's version).</summary>
    public static async Task<OpenedIndex> OpenVersionAsync(IndexStore store, string version, bool loadAll = true, CancellationToken ct = default) =>
        await Open(store, await store.ReadManifestAsync(version, ct).ConfigureAwait(false), loadAll, ct).ConfigureAwait(false);

    /// <summary>
    /// A version whose segments are written but whose manifest is not yet (a build calibrating before it publishes): every
    /// partition read, or with <paramref name="loadAll"/> false only the manifest and routing data.
    /// </summary>
    /// <param name="vectorsOf">
    /// With <paramref name="loadAll"/>: each partition's raw vectors come from it (given the partition's codes, for their
    /// row ids) instead of the version's vector segments, which are then not read: a build still holding its input.
    /// </param>
    public static Task<OpenedIndex> OpenUnpublishedAsync(IndexStore store, IndexManifest manifest, CancellationToken ct = default, bool loadAll = true,
        Func<PartitionCodes, PartitionVectors>? vectorsOf = null) =>
        Open(store, manifest, loadAll, ct, vectorsOf);

    /// <summary>
    /// Opens one version whose partitions live in a memory-bounded <see cref="SegmentCache"/> shared by
    /// every index of the process (a warm instance's data retention): partitions are fetched with
    /// <see cref="FetchForQueryAsync"/> and may be evicted between queries.
    /// </summary>
    public static async Task<OpenedIndex> OpenCachedAsync(IndexStore store, string version, SegmentCache cache, CancellationToken ct = default)
    {
        var index = await Open(store, await store.ReadManifestAsync(version, ct).ConfigureAwait(false), loadAll: false, ct).ConfigureAwait(false);
        index._cache = cache;
        return index;
    }

    private SegmentCache? _cache;

    /// <summary>
    /// The same version (manifest and routing shared, nothing re-read) with no partition in memory and its
    /// partitions fetched through <paramref name="cache"/>: a fresh instance for measuring cold queries, or one
    /// with a cache of a chosen size.
    /// </summary>
    public OpenedIndex WithCache(SegmentCache cache)
    {
        ArgumentNullException.ThrowIfNull(cache);
        return new OpenedIndex(_store, Manifest, Routing) { _cache = cache, WholeVectorsAfter = WholeVectorsAfter };
    }

    /// <summary>Bytes of every segment of this version: routing, and each partition's codes, raw vectors and attributes.</summary>
    public long StoredBytes => IndexStore.BlobsNamedBy(Manifest).Sum(s => s.Bytes);

    /// <summary>The cache partitions are fetched through: the shared one, or (an index opened lazily on its own) a private unbounded one.</summary>
    private SegmentCache FetchCache
    {
        get
        {
            if (_cache is { } c) return c;
            lock (_codes) return _cache ??= new SegmentCache(new SegmentCacheOptions { CapacityBytes = long.MaxValue / 4 });
        }
    }

    private readonly ThreadLocal<PartitionScanner> _collector = new(() => new PartitionScanner());
    private readonly int[] _rowFetches = [];

    /// <summary>
    /// How many queries fetch a partition's raw vectors by rows before the next one reads the whole segment into
    /// the cache (0: never, always rows). Rows keep a cold query cheap — a few KiB instead of the whole segment —
    /// but a warm instance then misses on every query that re-ranks rows it has not seen; a partition that is
    /// asked for again is likely to be asked for often (the tree sends it to the same instances), so from the
    /// second query on it is held whole (bench/storage.md compares the two).
    /// </summary>
    public int WholeVectorsAfter { get; set; } = 1;

    /// <summary>
    /// Fetches what one query needs from the given partitions (DESIGN.md §4, cold start): the codes of each
    /// (and its attributes when the query has a filter), then only the raw-vector rows its re-rank can touch,
    /// by ranged reads of checksummed blocks — coalesced, issued in parallel — instead of whole vector segments.
    /// Everything goes through the segment cache, so a warm instance answers repeated work from memory.
    /// <para>The rows are those <see cref="PartitionScanner.CollectRerankRows"/> lists (a scan with any running
    /// threshold re-ranks a subset of them), or for <see cref="FilterStrategy.Direct"/> every row that passes the
    /// filter. A caller running the direct strategy must say so in <paramref name="options"/> (Auto is planned as
    /// a partition scan); a row the scan then needs but was not fetched fails loudly (<see cref="MissingRowException"/>).</para>
    /// Partitions already held in memory (an index opened with loadAll) are returned as they are, with no reads.
    /// </summary>
    public async Task<PartitionFetch> FetchForQueryAsync(QueryContext query, IReadOnlyList<int> partitions, SearchOptions options, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        ArgumentNullException.ThrowIfNull(options);
        var filter = options.Filter is { MatchesAll: false } f ? f : null;
        if (filter is not null && Manifest.Attributes is null) throw new InvalidOperationException("a filtered query needs an index with attributes");
        var fetch = new PartitionFetch();
        await Parallel.ForEachAsync(partitions.Distinct(), new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = ct }, async (p, t) =>
        {
            var (data, bytes, requests, rows) = await FetchPartitionAsync(query, p, options, filter, t).ConfigureAwait(false);
            fetch.Add(p, data, bytes, requests, rows);
        }).ConfigureAwait(false);
        return fetch;
    }

    private async Task<(PartitionData Data, long Bytes, int Requests, int Rows)> FetchPartitionAsync(
        QueryContext query, int p, SearchOptions options, Filters.CompiledFilter? filter, CancellationToken ct)
    {
        if (IsLoaded(p) && (filter is null || _attributes[p] is not null))
            return (new PartitionData(_codes[p]!, _vectors[p]!, filter is null ? null : _attributes[p]), 0, 0, 0);
        var cache = FetchCache;
        var entry = Manifest.Partitions[p];
        long read = 0;
        int requests = 0;
        // Every load below counts its own bytes: the cache runs a loader once however many queries ask.
        Task<T> Load<T>(CacheEntryKind kind, Func<CancellationToken, Task<T>> load, long charge, Func<T, long> bytes) where T : class =>
            cache.GetOrLoadAsync(new SegmentKey(_store.Name, Manifest.Version, p, kind), async t =>
            {
                var value = await load(t).ConfigureAwait(false);
                Interlocked.Add(ref read, bytes(value));
                Interlocked.Increment(ref requests);
                return value;
            }, _ => charge, ct);

        // What the raw vectors will take is known before the codes arrive, so its first read (the whole segment,
        // or the head with the block checksums) runs alongside the codes read instead of after it.
        var wholeKey = new SegmentKey(_store.Name, Manifest.Version, p, CacheEntryKind.Vectors);
        Task<PartitionVectors>? whole = null;
        Task<VectorBlockTable>? blockTable = null;
        if (cache.TryGet<PartitionVectors>(wholeKey, out var held)) whole = Task.FromResult(held);
        // A partition ingest extended (appended rows, a deletion mask) is read whole: its rows span several segments.
        else if (entry.IsComposite || (WholeVectorsAfter > 0 && Interlocked.Increment(ref _rowFetches[p]) > WholeVectorsAfter))
            // Asked for again: worth holding whole, so that later queries on this instance read nothing.
            whole = Load(CacheEntryKind.Vectors, t => _store.ReadVectorsAsync(Manifest, entry, t), entry.Vectors.Bytes, v => v.StoredBytes);
        else
            blockTable = Load(CacheEntryKind.VectorBlockTable, t => _store.ReadVectorBlockTableAsync(Manifest, entry, t), VectorBlockTable.ExpectedHeadLength(entry.Count, Manifest.InternalDimensions), t => t.HeadBytes);
        var codesTask = Load(CacheEntryKind.Codes, t => _store.ReadCodesAsync(Manifest, entry, t), entry.Codes.Bytes, c => c.StoredBytes);
        var attributesTask = filter is null ? null
            : Load(CacheEntryKind.Attributes, t => _store.ReadAttributesAsync(Manifest, entry, t), entry.Attributes!.Bytes, _ => entry.Attributes!.Bytes);
        var codes = await codesTask.ConfigureAwait(false);
        var attributes = attributesTask is null ? null : await attributesTask.ConfigureAwait(false);
        if (whole is not null) return (new PartitionData(codes, await whole.ConfigureAwait(false), attributes), Interlocked.Read(ref read), requests, 0);

        var rows = new List<int>();
        if (filter is not null && options.FilterStrategy == FilterStrategy.Direct) MatchingRows(filter, attributes!, rows);
        else _collector.Value!.CollectRerankRows(query, codes, attributes, options, rows);
        var fetched = await _store.ReadVectorRowsAsync(Manifest, entry, rows, cache, await blockTable!.ConfigureAwait(false), ct).ConfigureAwait(false);
        return (new PartitionData(codes, fetched.Vectors, attributes), Interlocked.Read(ref read) + fetched.BytesRead, requests + fetched.Requests, rows.Count);
    }

    /// <summary>Rows the direct strategy computes exact distances for: code-level matches that pass the exact recheck.</summary>
    private static void MatchingRows(Filters.CompiledFilter filter, PartitionAttributes attributes, List<int> rows)
    {
        var codes = new byte[attributes.Count];
        filter.EvaluateCodes(attributes, codes);
        for (int i = 0; i < codes.Length; i++)
            if (codes[i] == 2 || (codes[i] == 1 && filter.Matches(attributes, i))) rows.Add(i);
    }

    private static async Task<OpenedIndex> Open(IndexStore store, IndexManifest manifest, bool loadAll, CancellationToken ct,
        Func<PartitionCodes, PartitionVectors>? vectorsOf = null)
    {
        var routing = await store.ReadRoutingAsync(manifest, ct).ConfigureAwait(false);
        var index = new OpenedIndex(store, manifest, routing);
        if (loadAll)
        {
            // Neighbouring partitions' segments are fetched together (a few requests per pack, not one per segment), a
            // bounded run of partitions at a time so that the fetched bytes held beside the decoded ones stay bounded.
            IEnumerable<SegmentRef> Read(PartitionEntry e) => vectorsOf is null ? e.Segments() : e.Segments().Except(e.VectorSegments());
            var sizes = manifest.Partitions.Select(e => Read(e).Sum(s => s.Bytes)).ToArray();
            foreach (var run in RunsOfPartitions(sizes, LoadAllFetchBytes))
            {
                var fetched = await store.PrefetchedAsync(manifest, run.SelectMany(p => Read(manifest.Partitions[p])), ct).ConfigureAwait(false);
                await Parallel.ForEachAsync(run, ct, async (p, c) =>
                {
                    index._codes[p] = await fetched.ReadCodesAsync(manifest, manifest.Partitions[p], c).ConfigureAwait(false);
                    index._vectors[p] = vectorsOf is not null ? vectorsOf(index._codes[p]!)
                        : await fetched.ReadVectorsAsync(manifest, manifest.Partitions[p], c).ConfigureAwait(false);
                    if (manifest.Attributes is not null)
                        index._attributes[p] = await fetched.ReadAttributesAsync(manifest, manifest.Partitions[p], c).ConfigureAwait(false);
                }).ConfigureAwait(false);
            }
        }
        return index;
    }

    /// <summary>Stored bytes a whole-index open fetches at a time (<see cref="RunsOfPartitions"/>).</summary>
    public const long LoadAllFetchBytes = 64L << 20;

    /// <summary>Consecutive partitions (of the given stored sizes) in runs of at most <paramref name="bytes"/> each (a larger partition alone).</summary>
    public static IEnumerable<int[]> RunsOfPartitions(IReadOnlyList<long> sizes, long bytes)
    {
        var run = new List<int>();
        long held = 0;
        for (int p = 0; p < sizes.Count; p++)
        {
            if (run.Count > 0 && held + sizes[p] > bytes)
            {
                yield return [.. run];
                run.Clear();
                held = 0;
            }
            run.Add(p);
            held += sizes[p];
        }
        if (run.Count > 0) yield return [.. run];
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

    /// <summary>A partition's attributes through the segment cache (null when the index has none); for results' ids and <c>include</c>.</summary>
    public async Task<PartitionAttributes?> GetAttributesAsync(int p, CancellationToken ct = default)
    {
        if (Manifest.Attributes is null) return null;
        if (_attributes[p] is { } loaded) return loaded;
        return await _store.ReadAttributesAsync(Manifest, Manifest.Partitions[p], FetchCache, ct).ConfigureAwait(false);
    }

    /// <summary>Bytes of OSQ codes (sign bits included) per vector, averaged over the index.</summary>
    public double CodeBytesPerVector => Manifest.Partitions.Sum(p => (double)p.BitsPerVector * p.Count) / Math.Max(1, Manifest.Count) / 8;
}

/// <summary>
/// What <see cref="OpenedIndex.FetchForQueryAsync"/> fetched for one query: each partition's data, and what it
/// cost. A partition counts as a cache hit when nothing of it had to be read from the store.
/// </summary>
public sealed class PartitionFetch
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<int, PartitionData> _data = new();
    private long _bytesRead, _rows;
    private int _hits, _misses, _requests;

    /// <summary>The fetched data of partition p; a partition that was not asked for is an error.</summary>
    public PartitionData this[int p] => _data.TryGetValue(p, out var d) ? d : throw new KeyNotFoundException($"partition {p} was not fetched for this query");

    /// <summary>For the scan overloads that take a partition source.</summary>
    public Func<int, PartitionData> PartitionOf => p => this[p];

    public IReadOnlyCollection<int> Partitions => _data.Keys.ToArray();
    /// <summary>Bytes this query read from the blob store (0 when everything was warm).</summary>
    public long BytesRead => Interlocked.Read(ref _bytesRead);
    public int CacheHits => Volatile.Read(ref _hits);
    public int CacheMisses => Volatile.Read(ref _misses);
    /// <summary>Blob requests issued (whole segments, heads and coalesced row ranges).</summary>
    public int Requests => Volatile.Read(ref _requests);
    /// <summary>Raw-vector rows the query asked for (fetched or already cached).</summary>
    public long RowsRequested => Interlocked.Read(ref _rows);

    internal void Add(int p, PartitionData data, long bytes, int requests, int rows)
    {
        _data[p] = data;
        Interlocked.Add(ref _bytesRead, bytes);
        Interlocked.Add(ref _requests, requests);
        Interlocked.Add(ref _rows, rows);
        if (bytes > 0) Interlocked.Increment(ref _misses); else Interlocked.Increment(ref _hits);
    }
}
