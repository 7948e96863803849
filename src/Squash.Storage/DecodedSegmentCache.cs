using System.Collections.Concurrent;

namespace Squash.Storage;

/// <summary>
/// Decoded segments (partition codes and attributes) a process read, kept up to a budget of decoded bytes, least recently
/// used out first. A key names one immutable segment: the store, the blob inside its version folder, the byte range of a
/// pack, and how it was decoded. Segments are written create-only and never rewritten in place, so a kept object stays
/// the segment's decoding for as long as the blob exists; only a segment that decoded without error is kept, so damaged
/// bytes still fail as the decoder names them. For a warm ingest instance: every run reads every partition's base and
/// appended segments, and unpacking their bit planes, not composing the live partition from them, was most of the run's
/// "read" (bench/writes.md). Callers share what they get: they must not change it.
/// </summary>
public sealed class DecodedSegmentCache(long capacityBytes)
{
    private sealed class Held(object value, long bytes)
    {
        public object Value { get; } = value;
        public long Bytes { get; } = bytes;
        public long Used;
    }

    private readonly ConcurrentDictionary<string, Held> _held = new(StringComparer.Ordinal);
    private readonly Lock _evicting = new();
    private long _bytes, _clock, _hits, _misses;

    public long CapacityBytes { get; } = capacityBytes;
    public long Bytes => Interlocked.Read(ref _bytes);
    public long Hits => Interlocked.Read(ref _hits);
    public long Misses => Interlocked.Read(ref _misses);
    public int Count => _held.Count;

    /// <summary>The key of a segment of <paramref name="store"/>: blob, range (null offset: the whole blob) and what decoding it took.</summary>
    public static string KeyOf(IBlobStore store, string blob, long? offset, long bytes, string decoding) =>
        $"{store.Description}\n{blob}\n{offset?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "whole"}+{bytes}\n{decoding}";

    /// <summary>The kept decoding of <paramref name="key"/>, else <paramref name="decode"/>'s (kept when it fits).</summary>
    public async Task<T> GetOrDecodeAsync<T>(string key, Func<CancellationToken, Task<T>> decode, Func<T, long> bytesOf, CancellationToken ct) where T : class
    {
        if (_held.TryGetValue(key, out var held) && held.Value is T hit)
        {
            Volatile.Write(ref held.Used, Interlocked.Increment(ref _clock));
            Interlocked.Increment(ref _hits);
            return hit;
        }
        Interlocked.Increment(ref _misses);
        var value = await decode(ct).ConfigureAwait(false);
        long bytes = bytesOf(value);
        // One segment may not take more than a quarter of the budget (as the byte cache: one cannot empty it).
        if (bytes > CapacityBytes / 4) return value;
        if (!_held.TryAdd(key, new Held(value, bytes) { Used = Interlocked.Increment(ref _clock) })) return value;
        if (Interlocked.Add(ref _bytes, bytes) > CapacityBytes) Evict();
        return value;
    }

    /// <summary>Drops every kept segment of <paramref name="store"/> (a test's cold run; nothing else needs it).</summary>
    public void Forget(IBlobStore store)
    {
        var prefix = store.Description + "\n";
        foreach (var key in _held.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)).ToList())
            if (_held.TryRemove(key, out var gone)) Interlocked.Add(ref _bytes, -gone.Bytes);
    }

    private void Evict()
    {
        lock (_evicting)
        {
            if (Interlocked.Read(ref _bytes) <= CapacityBytes) return;
            // Down to three quarters, least recently used first, so that a full cache does not sort on every add.
            foreach (var (key, _) in _held.ToArray().OrderBy(x => Volatile.Read(ref x.Value.Used)))
            {
                if (Interlocked.Read(ref _bytes) <= CapacityBytes / 4 * 3) break;
                if (_held.TryRemove(key, out var gone)) Interlocked.Add(ref _bytes, -gone.Bytes);
            }
        }
    }
}
