using System.Collections.Concurrent;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Options;
using Squash.Index.Format;
using Squash.Search;
using Squash.Storage;

namespace Squash.Functions;

/// <summary>
/// The indexes this instance has opened, by (name, version). Partitions load lazily and stay decoded in
/// memory, so a warm instance answers from memory (data retention). The current version is re-read at
/// most every <see cref="FunctionSettings.CurrentRecheck"/> (1 s by default) so a newly published index is picked up. Only versions that opened are kept:
/// a failed open (store down, unknown version) is forgotten, and the next request tries again.
/// </summary>
public sealed partial class IndexCatalog
{
    private readonly IBlobStore _blobs;
    private readonly ConcurrentDictionary<(string, string), Lazy<Task<OpenedIndex?>>> _open = new();
    private readonly ConcurrentDictionary<string, (string Version, DateTime Checked)> _current = new();

    private readonly SegmentCache _cache;
    private readonly TimeSpan _currentRecheck;

    /// <param name="store">The blob store; by default opened from the Store/Container settings (tests pass a fault-injecting one).</param>
    public IndexCatalog(IOptions<FunctionSettings> settings, IBlobStore? store = null)
    {
        _cache = new SegmentCache(new SegmentCacheOptions { CapacityBytes = settings.Value.CacheBytes > 0 ? settings.Value.CacheBytes : (long)settings.Value.CacheMb << 20 });
        _blobs = store ?? BlobStores.Open(settings.Value.Store, settings.Value.Container);
        _currentRecheck = settings.Value.CurrentRecheck;
    }

    /// <summary>An index name: lower-case letters, digits and '-', at most 63 (a container-safe name); the OpenAPI document states it too.</summary>
    public const string NamePatternText = "^[a-z0-9][a-z0-9-]{0,62}$";

    [GeneratedRegex(NamePatternText)]
    private static partial Regex NamePattern();

    public static bool IsValidName(string name) => NamePattern().IsMatch(name);

    /// <summary>The 400's message for a name <see cref="IsValidName"/> refuses (reported under 'index').</summary>
    public static string InvalidNameMessage(string name) => $"'{name}' is not a valid index name (lower-case letters, digits and '-', at most 63)";

    /// <summary>Only ids a build can write (so never a '/', '.' or '..' inside a blob name).</summary>
    public static bool IsValidVersion(string version) => VersionIds.IsWellFormed(version);

    /// <summary>The instance's segment cache (hits, misses, evictions, bytes).</summary>
    public SegmentCacheStats CacheStats => _cache.Stats;

    public IndexStore StoreFor(string name) => new(_blobs, name);

    /// <summary>The current version of an index, or null when none is published.</summary>
    /// <exception cref="IndexUnavailableException">The index cannot be opened (damaged, or the store cannot be read).</exception>
    public async Task<OpenedIndex?> OpenCurrentAsync(string name, CancellationToken ct)
    {
        for (int attempt = 0; ; attempt++)
        {
            if (!_current.TryGetValue(name, out var cur) || DateTime.UtcNow - cur.Checked >= _currentRecheck || attempt > 0)
            {
                var pointer = await Guard(name, () => StoreFor(name).GetCurrentAsync(ct), ct).ConfigureAwait(false);
                if (pointer is null) return null;
                cur = (pointer.Value.Version, DateTime.UtcNow);
                _current[name] = cur;
            }
            var opened = await OpenAsync(name, cur.Version, ct).ConfigureAwait(false);
            if (opened is not null) return opened;
            // The pointer named a version without a manifest: a cached pointer may be stale, so read it once more.
            if (attempt > 0)
                throw new IndexUnavailableException(name, $"index '{name}' is damaged: its current pointer names version '{cur.Version}', which has no manifest", transient: false);
        }
    }

    /// <summary>Whether some version of the index is open (or opening) in this instance.</summary>
    public bool IsOpen(string name) => _open.Keys.Any(k => k.Item1 == name);

    /// <summary>
    /// A specific version (tree nodes use the coordinator's version, so one query sees one index), or null when the
    /// index has no such version. Concurrent requests share one open; a failed or missing one is not kept.
    /// </summary>
    /// <exception cref="IndexUnavailableException">The version cannot be opened (damaged, or the store cannot be read).</exception>
    public async Task<OpenedIndex?> OpenAsync(string name, string version, CancellationToken ct)
    {
        var key = (name, version);
        var lazy = _open.GetOrAdd(key, k => new Lazy<Task<OpenedIndex?>>(() => OpenVersionAsync(k.Item1, k.Item2)));
        try
        {
            var opened = await lazy.Value.WaitAsync(ct).ConfigureAwait(false);
            if (opened is null) _open.TryRemove(new KeyValuePair<(string, string), Lazy<Task<OpenedIndex?>>>(key, lazy));
            return opened;
        }
        catch (Exception) when (lazy.Value.IsFaulted)
        {
            // Only this attempt's entry goes: a retry that has already replaced it stays.
            _open.TryRemove(new KeyValuePair<(string, string), Lazy<Task<OpenedIndex?>>>(key, lazy));
            throw;
        }
    }

    private Task<OpenedIndex?> OpenVersionAsync(string name, string version) => Guard(name, async () =>
    {
        var store = StoreFor(name);
        try
        {
            // Not cancelled with the request that started it: other requests may be waiting for the same open.
            return await OpenedIndex.OpenCachedAsync(store, version, _cache, CancellationToken.None).ConfigureAwait(false);
        }
        catch (CorruptIndexException)
        {
            // A version that was never published (or is gone) is "not found", not damage.
            if (await store.Blobs.GetInfoAsync(store.VersionPrefix(version) + "manifest.json").ConfigureAwait(false) is null) return null;
            throw;
        }
    }, CancellationToken.None);

    /// <summary>Turns a damaged index or a store that cannot be read into an <see cref="IndexUnavailableException"/>; anything else is a bug and passes.</summary>
    private async Task<T> Guard<T>(string name, Func<Task<T>> open, CancellationToken ct)
    {
        try
        {
            return await open().ConfigureAwait(false);
        }
        catch (CorruptIndexException e)
        {
            throw new IndexUnavailableException(name, $"index '{name}' is damaged: {WithoutLocations(e.Message)}", transient: false, e);
        }
        catch (Exception e) when (!ct.IsCancellationRequested && StoreFailures.IsUnreachable(e))
        {
            throw new IndexUnavailableException(name, $"index '{name}' could not be read from the store; try again later", transient: true, e);
        }
    }

    /// <summary>
    /// A store's message for a client: the store's description goes, a blob name keeps only its last part, and a .NET
    /// type name (from a JSON parser's message) becomes "the expected type".
    /// </summary>
    private string WithoutLocations(string message)
    {
        var text = message.Replace(_blobs.Description, "the store", StringComparison.Ordinal);
        text = QuotedBlobName().Replace(text, m => $"'{m.Groups[1].Value}'");
        return DotNetTypeName().Replace(text, "the expected type");
    }

    [GeneratedRegex("'[^']*/([^'/]*)'")]
    private static partial Regex QuotedBlobName();

    [GeneratedRegex(@"\b(?:Squash|System|Microsoft)(?:\.\w+)+(?:`\d+)?(?:\[[^\]]*\])?")]
    private static partial Regex DotNetTypeName();
}

/// <summary>An index that exists but cannot be opened now: damaged (a 500), or its store could not be read (a 503, worth retrying).</summary>
public sealed class IndexUnavailableException(string index, string message, bool transient, Exception? inner = null) : Exception(message, inner)
{
    public string Index { get; } = index;
    public bool Transient { get; } = transient;
    /// <summary>The problem's title where the defaults ("Index damaged", "Index temporarily unavailable") would not say what is wrong.</summary>
    public string? Title { get; init; }
    /// <summary>
    /// The Retry-After a transient failure answers with: a store that could not be read is worth asking again in a second;
    /// null where asking the same request again soon would only fail again (the remedy is to change the request).
    /// </summary>
    public TimeSpan? RetryAfter { get; init; } = TimeSpan.FromSeconds(1);
}
