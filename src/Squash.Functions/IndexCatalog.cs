using System.Collections.Concurrent;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Options;
using Squash.Search;
using Squash.Storage;

namespace Squash.Functions;

/// <summary>
/// The indexes this instance has opened, by (name, version). Partitions load lazily and stay decoded in
/// memory, so a warm instance answers from memory (data retention). The current version is re-read at
/// most every few seconds so a newly published index is picked up.
/// </summary>
public sealed partial class IndexCatalog
{
    private readonly IBlobStore _blobs;
    private readonly ConcurrentDictionary<(string, string), Lazy<Task<LoadedIndex>>> _open = new();
    private readonly ConcurrentDictionary<string, (string Version, DateTime Checked)> _current = new();

    private readonly SegmentCache _cache;

    /// <param name="store">The blob store; by default opened from the Store/Container settings (tests pass a fault-injecting one).</param>
    public IndexCatalog(IOptions<FunctionSettings> settings, IBlobStore? store = null)
    {
        _cache = new SegmentCache(new SegmentCacheOptions { CapacityBytes = settings.Value.CacheBytes > 0 ? settings.Value.CacheBytes : (long)settings.Value.CacheMb << 20 });
        _blobs = store ?? BlobStores.Open(settings.Value.Store, settings.Value.Container);
    }

    [GeneratedRegex("^[a-z0-9][a-z0-9-]{0,62}$")]
    private static partial Regex NamePattern();

    public static bool IsValidName(string name) => NamePattern().IsMatch(name);

    /// <summary>The instance's segment cache (hits, misses, evictions, bytes).</summary>
    public SegmentCacheStats CacheStats => _cache.Stats;

    public IndexStore StoreFor(string name) => new(_blobs, name);

    /// <summary>The current version of an index, or null when none is published.</summary>
    public async Task<LoadedIndex?> OpenCurrentAsync(string name, CancellationToken ct)
    {
        if (!_current.TryGetValue(name, out var cur) || DateTime.UtcNow - cur.Checked > TimeSpan.FromSeconds(5))
        {
            var pointer = await StoreFor(name).GetCurrentAsync(ct).ConfigureAwait(false);
            if (pointer is null) return null;
            cur = (pointer.Value.Version, DateTime.UtcNow);
            _current[name] = cur;
        }
        return await OpenAsync(name, cur.Version, ct).ConfigureAwait(false);
    }

    /// <summary>Whether some version of the index is open (or opening) in this instance.</summary>
    public bool IsOpen(string name) => _open.Keys.Any(k => k.Item1 == name);

    /// <summary>A specific version (tree nodes use the coordinator's version, so one query sees one index).</summary>
    public Task<LoadedIndex> OpenAsync(string name, string version, CancellationToken ct)
    {
        var lazy = _open.GetOrAdd((name, version), key => new Lazy<Task<LoadedIndex>>(() =>
            LoadedIndex.OpenCachedAsync(StoreFor(key.Item1), key.Item2, _cache, CancellationToken.None)));
        return lazy.Value.WaitAsync(ct);
    }
}
