namespace Squash.Storage;

/// <summary>
/// What a cache entry holds; part of the key because one partition has several entries. Not the segment file's own
/// <see cref="Squash.Index.Format.SegmentKind"/>: the cache also keeps parts of a vector segment (its block table, single blocks).
/// </summary>
public enum CacheEntryKind
{
    Routing,
    Codes,
    Vectors,
    Attributes,
    /// <summary>A raw-vector segment's head: the block checksums that ranged reads are verified against.</summary>
    VectorBlockTable,
    /// <summary>One checksummed block of raw-vector rows, fetched by a ranged read (<see cref="SegmentKey.Block"/>).</summary>
    VectorBlock,
}

/// <summary>
/// One decoded segment (or, for <see cref="CacheEntryKind.VectorBlock"/>, one block of rows) of one published version
/// (versions are immutable, so keys never go stale).
/// </summary>
public readonly record struct SegmentKey(string Index, string Version, int Partition, CacheEntryKind Kind, int Block = 0);

public enum CacheEvictionPolicy
{
    /// <summary>Least recently used: one list, a hit moves the entry to the front.</summary>
    Lru,
    /// <summary>
    /// S3-FIFO (Yang et al., SOSP 2023): new entries go to a small FIFO (~10 % of the bytes); only those
    /// hit while there are promoted to the main FIFO, which gives entries with hits another round
    /// (a 2-bit frequency, decremented per round). Keys evicted from the small queue are remembered in
    /// a ghost queue, and come back straight into main. One-hit wonders (a scan) leave quickly.
    /// </summary>
    S3Fifo,
}

public sealed record SegmentCacheOptions
{
    /// <summary>The bound on the sizes of the cached values, in bytes.</summary>
    public long CapacityBytes { get; init; } = 512L << 20;

    /// <summary>
    /// Chosen by measurement (SegmentCacheSimulationTests: Zipf(1.0) over 10,000 equal-size keys, a cache of
    /// 1,000, 300,000 requests, seed 42): hit ratio LRU 0.6751, S3-FIFO 0.7328; with a 500-key
    /// one-off scan every 20,000 requests LRU 0.6528, S3-FIFO 0.7166. S3-FIFO wins both, and exact-mode or cold-partition scans are
    /// exactly the one-hit traffic it keeps out of the main queue.
    /// </summary>
    public CacheEvictionPolicy Policy { get; init; } = CacheEvictionPolicy.S3Fifo;

    /// <summary>S3-FIFO's small queue, as a fraction of the capacity.</summary>
    public double SmallQueueFraction { get; init; } = 0.1;
}

/// <summary>Counters since the cache was made. Every request is a hit or a miss; a miss is one load.</summary>
public readonly record struct SegmentCacheStats(long Hits, long Misses, long Evictions, long BytesLoaded, long CurrentBytes, int Entries)
{
    public long Requests => Hits + Misses;
    public double HitRatio => Requests == 0 ? 0 : (double)Hits / Requests;
}

/// <summary>
/// The warm-instance cache of decoded segments (DESIGN.md §4, data retention): bounded in bytes,
/// single-flight (however many queries want a segment at once, it is loaded once and they all wait
/// for that load), thread-safe. One lock guards the bookkeeping; loads run outside it.
/// </summary>
public sealed class SegmentCache
{
    private readonly object _gate = new();
    private readonly Dictionary<SegmentKey, CacheEntry> _entries = new();
    private readonly Dictionary<SegmentKey, Task<object>> _loading = new();
    private readonly EvictionQueue _policy;
    private long _hits, _misses, _evictions, _bytesLoaded, _currentBytes;

    public SegmentCache(SegmentCacheOptions? options = null)
    {
        Options = options ?? new SegmentCacheOptions();
        if (Options.CapacityBytes < 0) throw new ArgumentOutOfRangeException(nameof(options), $"CapacityBytes must be ≥ 0, got {Options.CapacityBytes}");
        if (Options.SmallQueueFraction is <= 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(options), $"SmallQueueFraction must lie in (0, 1), got {Options.SmallQueueFraction}");
        _policy = Options.Policy switch
        {
            CacheEvictionPolicy.Lru => new LruQueue(),
            CacheEvictionPolicy.S3Fifo => new S3FifoQueue((long)(Options.CapacityBytes * Options.SmallQueueFraction)),
            _ => throw new ArgumentOutOfRangeException(nameof(options), $"unknown policy {Options.Policy}"),
        };
    }

    public SegmentCacheOptions Options { get; }

    public SegmentCacheStats Stats
    {
        get
        {
            lock (_gate) return new SegmentCacheStats(_hits, _misses, _evictions, _bytesLoaded, _currentBytes, _entries.Count);
        }
    }

    /// <summary>
    /// The cached value if present (counted as a hit); on false nothing is counted, so a caller that then
    /// asks <see cref="GetOrLoadAsync"/> is counted once (a hit if someone else's load is in flight, else a miss).
    /// Lets a caller find out which of many small entries it must fetch, and fetch them in few requests.
    /// </summary>
    public bool TryGet<T>(SegmentKey key, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out T value) where T : class
    {
        lock (_gate)
        {
            if (_entries.TryGetValue(key, out var entry))
            {
                _hits++;
                _policy.Touched(entry);
                value = (T)entry.Value;
                return true;
            }
        }
        value = null;
        return false;
    }

    /// <summary>
    /// The cached value for <paramref name="key"/>, loading it if absent. The load is not cancelled by
    /// <paramref name="cancellationToken"/> (others may be waiting for it, and a finished load is worth
    /// keeping); the token only stops this caller's wait.
    /// </summary>
    public async Task<T> GetOrLoadAsync<T>(SegmentKey key, Func<CancellationToken, Task<T>> load, Func<T, long> size, CancellationToken cancellationToken = default)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(load);
        ArgumentNullException.ThrowIfNull(size);
        Task<object> pending;
        TaskCompletionSource<object>? mine = null;
        lock (_gate)
        {
            if (_entries.TryGetValue(key, out var entry))
            {
                _hits++;
                _policy.Touched(entry);
                return (T)entry.Value;
            }
            if (_loading.TryGetValue(key, out var inFlight))
            {
                // Someone else is loading it: no second read of the blob.
                _hits++;
                pending = inFlight;
            }
            else
            {
                _misses++;
                mine = new TaskCompletionSource<object>(TaskCreationOptions.RunContinuationsAsynchronously);
                pending = mine.Task;
                _loading.Add(key, pending);
            }
        }
        // Started, not awaited: the loader's own wait is cancellable like everyone else's.
        // LoadAsync never throws; failures travel through the shared task.
        if (mine is not null) _ = LoadAsync(key, load, size, mine);
        return (T)await pending.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task LoadAsync<T>(SegmentKey key, Func<CancellationToken, Task<T>> load, Func<T, long> size, TaskCompletionSource<object> done)
        where T : class
    {
        T value;
        long bytes;
        try
        {
            value = await load(CancellationToken.None).ConfigureAwait(false);
            bytes = size(value);
            if (bytes < 0) throw new InvalidOperationException($"segment {key} reported a negative size {bytes}");
        }
        catch (Exception e)
        {
            // Not cached: the next request tries again.
            lock (_gate) _loading.Remove(key);
            done.SetException(e);
            return;
        }
        lock (_gate)
        {
            _loading.Remove(key);
            _bytesLoaded += bytes;
            // A value bigger than the whole cache is handed out but not kept.
            if (bytes <= Options.CapacityBytes)
            {
                var entry = new CacheEntry(key, value, bytes);
                _entries.Add(key, entry);
                _currentBytes += bytes;
                _policy.Added(entry);
                while (_currentBytes > Options.CapacityBytes)
                {
                    var victim = _policy.Evict();
                    _entries.Remove(victim.Key);
                    _currentBytes -= victim.Size;
                    _evictions++;
                }
            }
        }
        done.SetResult(value);
    }

    private sealed class CacheEntry(SegmentKey key, object value, long size)
    {
        public SegmentKey Key { get; } = key;
        public object Value { get; } = value;
        public long Size { get; } = size;
        /// <summary>S3-FIFO's 2-bit access counter.</summary>
        public int Frequency;
        public LinkedListNode<CacheEntry>? Node;
    }

    /// <summary>The order entries leave in. Called under the cache's lock.</summary>
    private abstract class EvictionQueue
    {
        public abstract void Added(CacheEntry entry);
        public abstract void Touched(CacheEntry entry);
        /// <summary>Removes and returns the next victim; only called while something is cached.</summary>
        public abstract CacheEntry Evict();
    }

    private sealed class LruQueue : EvictionQueue
    {
        private readonly LinkedList<CacheEntry> _list = new();

        public override void Added(CacheEntry entry) => entry.Node = _list.AddFirst(entry);

        public override void Touched(CacheEntry entry)
        {
            _list.Remove(entry.Node!);
            _list.AddFirst(entry.Node!);
        }

        public override CacheEntry Evict()
        {
            var last = _list.Last!;
            _list.RemoveLast();
            return last.Value;
        }
    }

    private sealed class S3FifoQueue(long smallTargetBytes) : EvictionQueue
    {
        // Newest at the front, oldest at the back, in all three queues.
        private readonly LinkedList<CacheEntry> _small = new(), _main = new();
        private readonly LinkedList<SegmentKey> _ghost = new();
        private readonly Dictionary<SegmentKey, LinkedListNode<SegmentKey>> _ghostIndex = new();
        private long _smallBytes;

        public override void Added(CacheEntry entry)
        {
            if (_ghostIndex.Remove(entry.Key, out var ghost))
            {
                // Evicted from the small queue recently and wanted again: it has earned main.
                _ghost.Remove(ghost);
                entry.Node = _main.AddFirst(entry);
            }
            else
            {
                entry.Node = _small.AddFirst(entry);
                _smallBytes += entry.Size;
            }
        }

        public override void Touched(CacheEntry entry) => entry.Frequency = Math.Min(entry.Frequency + 1, 3);

        public override CacheEntry Evict()
        {
            while (true)
            {
                if (_small.Count > 0 && (_smallBytes > smallTargetBytes || _main.Count == 0))
                {
                    var t = _small.Last!.Value;
                    _small.RemoveLast();
                    _smallBytes -= t.Size;
                    if (t.Frequency > 0)
                    {
                        // Hit while on probation: promote, with the count reset so main judges it afresh.
                        t.Frequency = 0;
                        t.Node = _main.AddFirst(t);
                        continue;
                    }
                    Remember(t.Key);
                    return t;
                }
                var m = _main.Last!.Value;
                _main.RemoveLast();
                if (m.Frequency > 0)
                {
                    m.Frequency--;
                    m.Node = _main.AddFirst(m);
                    continue;
                }
                return m;
            }
        }

        private void Remember(SegmentKey key)
        {
            _ghostIndex[key] = _ghost.AddFirst(key);
            // The ghost holds keys only; as many as main holds entries is the paper's choice.
            int cap = Math.Max(16, _main.Count + _small.Count);
            while (_ghost.Count > cap)
            {
                _ghostIndex.Remove(_ghost.Last!.Value);
                _ghost.RemoveLast();
            }
        }
    }
}
